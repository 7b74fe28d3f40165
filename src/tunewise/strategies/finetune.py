"""Fine-tuning family: LoRA (PEFT) and full supervised fine-tuning, scored like every other option.

The fine-tuned model is asked with the same system turn as zero-shot and scored by the same label
likelihood, so the comparison isolates what training adds. Loss is on the answer tokens only;
a validation slice carved from train drives early stopping; the artifact is saved in the run folder.

On one-epoch budgets (or with the option `schedule: wsd`) LoRA trains with a warmup-stable-decay
schedule on train in nested order (the budget's learning-curve subsets first), and saves a decay
branch per subset next to its adapter (`branch_dir`): the learning curve scores those instead of
training each point again (`schedule: linear` trains the points separately, as before). A candidate with the `adapter` option is
such a saved LoRA, loaded and scored without training.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from tunewise.assets import DEFAULT_MODEL
from tunewise.data.records import Record
from tunewise.data.split import nested_fraction, nested_order
from tunewise.errors import ConfigError
from tunewise.files import write_atomic
from tunewise.models.backend import Scored
from tunewise.models.lm import LanguageModel
from tunewise.strategies.base import (CandidateSpec, Context, Family, FitFacts, answer_cap, register,
                                      require_answer_cap)
from tunewise.strategies.prompts import input_turns, system_turn

FULL_FT_MAX_PARAMS = 500_000_000
FACTS = "facts.json"  # beside the adapter kept in the store: what training measured
ANSWER_FILE = "answer.json"  # beside the saved weights: new tokens per generated answer


class FineTune:
    family: Family = "finetune"
    method = "lora"

    def __init__(self, spec: CandidateSpec):
        from tunewise.models.train import TrainConfig

        self.spec = spec
        self.model_name = spec.model or DEFAULT_MODEL
        self.options = dict(spec.options)
        self.fraction = float(self.options.pop("fraction", 1.0))  # learning-curve point
        self.adapter = self.options.pop("adapter", None)  # a saved LoRA to score instead of training
        self.cfg_fields = set(TrainConfig.model_fields)
        unknown = set(self.options) - self.cfg_fields
        if unknown:
            raise ConfigError(f"candidate '{spec.name}': unknown option(s) {sorted(unknown)}",
                              fix=f"use {sorted(self.cfg_fields)}")

    def config(self, ctx: Context):
        from tunewise.models.train import TrainConfig

        defaults = {"method": self.method, "epochs": ctx.budget.epochs, "max_length": ctx.budget.max_length,
                    "seed": ctx.seed}
        if self.method == "lora":
            defaults |= {"layers_share": ctx.budget.lora_layers_share}
            # The curve from its branches (`curve_fractions`), where it was measured to agree: one epoch,
            # classification. On the drug-condition demo (free text) the WSD LoRA scored token F1 0.075
            # [0.014, 0.136] below the linear one on 64 paired questions, so generation keeps linear.
            if self.options.get("epochs", ctx.budget.epochs) == 1 and ctx.task.type == "classification":
                defaults |= {"schedule": "wsd"}
        return TrainConfig(**(defaults | self.options))

    def settings(self) -> dict:
        out = {"model": self.model_name, "method": self.method, "fraction": self.fraction, **self.options}
        if self.adapter is not None:  # the weights, not the folder, decide the result
            weights = Path(self.adapter) / "adapter_model.safetensors"
            out["adapter"] = hashlib.sha256(weights.read_bytes()).hexdigest()[:16] if weights.is_file() else None
        return out

    def curve_fractions(self, ctx: Context) -> list[float]:
        """The learning-curve subsets a WSD run branches for: the budget's, for the main LoRA. On the
        demo (benchmarks/results/curve.md, 379 test reviews) the branches with decay_share 0.3 scored
        0.654, 0.678, 0.668 against 0.660, 0.683, 0.681 for separate trainings, all within each other's
        intervals, at 1.28 trainings instead of 1.9 (decay_share 0.2 had put the 1/2 point at 0.51)."""
        if self.method != "lora" or self.fraction < 1:
            return []
        return [f for f in ctx.budget.curve_fractions if f < 1]

    def examples(self, lm: LanguageModel, records: list[Record], system):
        """Training examples; a multi-turn history too long for max_length loses its oldest turns (the
        system turn and the latest turns kept: cutting the prompt from the left would drop the system turn)."""
        from tunewise.data.history import truncate
        from tunewise.models.train import Example

        out = []
        for r in records:
            completion = lm.label_ids([r.output])[0]
            turns = self.turns(r)
            if r.multi_turn:
                turns, cut = truncate(turns, lambda t: len(lm.encode(lm.render(system + t, add_generation_prompt=True)))
                                      + len(completion) <= self.max_length)
                self.history_cut += cut
            out.append(Example(prompt_ids=lm.encode(lm.render(system + turns, add_generation_prompt=True)),
                               completion_ids=completion))
        return out

    def fit(self, ctx: Context) -> FitFacts:
        from tunewise.models.load import count_params, load_model
        from tunewise.models.train import save_artifact, train

        model, tokenizer = load_model(self.model_name, device=ctx.device, dtype="float32")
        params = count_params(model)[0]
        self.system = system_turn(ctx.task, ctx.labels)
        self.max_new_tokens = answer_cap(ctx)  # as prompting gets
        stratified = ctx.task.type == "classification"
        if self.adapter is not None:
            return self._load_adapter(ctx, model, tokenizer, params)
        if self.method == "full" and params > FULL_FT_MAX_PARAMS:
            raise ConfigError(f"full fine-tuning is limited to models under {FULL_FT_MAX_PARAMS / 1e6:.0f}M "
                              f"parameters; {self.model_name} has {params / 1e6:.0f}M", fix="use lora")
        trained = (ctx.checkpoint_dir / "trained") if ctx.checkpoint_dir and self.method == "lora" else None
        if trained is not None and (trained / FACTS).is_file():
            return self._load_trained(model, tokenizer, trained, ctx)
        cfg = self.config(ctx)
        fractions = self.curve_fractions(ctx) if cfg.schedule == "wsd" else []
        if fractions:
            records, sizes = nested_order(ctx.train, fractions, seed=ctx.seed, stratified=stratified)
            cfg = cfg.model_copy(update={"nested_sizes": sizes})
        else:
            records = nested_fraction(ctx.train, self.fraction, seed=ctx.seed, stratified=stratified)
        base = LanguageModel(model, tokenizer, self.model_name)
        self.max_length, self.history_cut = cfg.max_length, 0
        result = train(model, tokenizer, self.examples(base, records, self.system),
                       self.examples(base, ctx.validation, self.system), cfg, ctx.checkpoint_dir or ctx.work_dir,
                       progress=ctx.progress is not None)
        artifact = save_artifact(result.model, tokenizer, ctx.work_dir / ("adapter" if self.method == "lora" else "model"))
        self.artifact = artifact
        _save_branches(result, artifact)
        if trained is not None:  # kept in the store: a resumed run scores more records without retraining
            save_artifact(result.model, tokenizer, trained)
            _save_branches(result, trained)  # and its learning curve without training the points
        facts = FitFacts(
            train_records=len(records), train_seconds=result.seconds - result.branch_seconds,
            train_tokens=result.tokens, train_tokens_per_s=result.tokens_per_s, peak_memory_mb=result.peak_memory_mb,
            losses=list(result.losses), artifact=str(artifact), params=params,
            trainable_params=count_params(result.model)[1],
            scoring="likelihood" if ctx.task.type == "classification" else None,
            notes=([f"stopped early after epoch {result.best_epoch}"] if result.stopped_early else [])
            + ([f"resumed from step {result.resumed_from_step}"] if result.resumed_from_step else [])
            + ([result.checkpoint_refused] if result.checkpoint_refused else [])
            + ([f"history truncated to {cfg.max_length} tokens in {self.history_cut} training/validation records "
                "(system turn and latest turns kept)"] if self.history_cut else [])
            + ([f"learning-curve decay branches: {result.branch_steps} steps, {result.branch_seconds:.0f} s "
                f"(not in train_seconds)"] if result.branch_steps else []))
        if trained is not None:  # written last: its presence means the adapter beside it is complete
            write_atomic(trained / FACTS, facts.model_dump_json())
        self._ready(result.model, tokenizer, ctx)  # merges the adapter: after every save
        return facts

    def _ready(self, model, tokenizer, ctx: Context) -> None:
        self.lm = LanguageModel(self._for_scoring(model, ctx.device), tokenizer, self.model_name)

    def _load_trained(self, base_model, tokenizer, trained, ctx: Context) -> FitFacts:
        """The adapter this candidate trained before (kept in the store), instead of training again."""
        from peft import PeftModel

        self.artifact = trained
        self._ready(PeftModel.from_pretrained(base_model, str(trained)), tokenizer, ctx)
        facts = FitFacts.model_validate(json.loads((trained / FACTS).read_text()))
        return facts.model_copy(update={"notes": facts.notes + ["trained adapter loaded from the store"]})

    def _load_adapter(self, ctx: Context, model, tokenizer, params: int) -> FitFacts:
        """A saved LoRA (a learning-curve decay branch) on the base model, ready to score."""
        from peft import PeftModel

        from tunewise.models.load import count_params

        tuned = PeftModel.from_pretrained(model, self.adapter)
        self.artifact = Path(self.adapter)
        trainable = count_params(tuned)[1]
        self._ready(tuned, tokenizer, ctx)
        records = nested_fraction(ctx.train, self.fraction, seed=ctx.seed,
                                  stratified=ctx.task.type == "classification")
        return FitFacts(train_records=len(records), artifact=str(self.adapter), params=params,
                        trainable_params=trainable,
                        scoring="likelihood" if ctx.task.type == "classification" else None,
                        notes=[f"decay branch saved at {self.adapter}"])

    def save(self, folder: Path) -> None:
        """The trained weights (the LoRA adapter, or the whole model for full fine-tuning), with the
        tokenizer; the base model is named in the adapter's config and in candidate.json."""
        shutil.copytree(self.artifact, folder / self.weights_dir, ignore=shutil.ignore_patterns("curve"))
        (folder / ANSWER_FILE).write_text(json.dumps({"max_new_tokens": self.max_new_tokens}))

    def load(self, ctx: Context, folder: Path) -> None:
        from tunewise.models.load import load_model

        self.system = system_turn(ctx.task, ctx.labels)
        answer = folder / ANSWER_FILE  # generation: the run's answer length cap
        self.max_new_tokens = json.loads(answer.read_text())["max_new_tokens"] if answer.is_file() else None
        require_answer_cap(ctx, folder, self.max_new_tokens)
        weights = folder / self.weights_dir
        if self.method == "full":
            model, tokenizer = load_model(str(weights), device=ctx.device, dtype="float32")
            self._ready(model, tokenizer, ctx)
            return
        from peft import PeftModel

        model, tokenizer = load_model(self.model_name, device=ctx.device, dtype="float32")
        self._ready(PeftModel.from_pretrained(model, str(weights)), tokenizer, ctx)

    @property
    def weights_dir(self) -> str:
        return "adapter" if self.method == "lora" else "model"

    @staticmethod
    def _for_scoring(model, device: str):
        """LoRA merged into the base and cast like the prompting candidates: same scoring speed."""
        from tunewise.models.load import cast_weights, pick_device, pick_dtype

        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        return cast_weights(model, pick_dtype("auto", pick_device(device))).eval()

    def turns(self, record: Record):
        """The record's own turns as the model sees them in training and scoring (retrieval adds passages)."""
        return input_turns(record)

    def predict(self, ctx: Context, record: Record) -> Scored:
        return self.predict_many(ctx, [record])[0]

    def predict_many(self, ctx: Context, records: list[Record]) -> list[Scored]:
        rests = [self.turns(r) for r in records]
        if not records or ctx.task.type == "generation":
            return self.lm.generate([self.system + rest for rest in rests], self.max_new_tokens)
        return self.lm.score_labels(self.system, rests, ctx.labels, full=False)


def branch_dir(artifact: str | Path, n: int) -> Path:
    """Where the LoRA run saved its decay branch for the subset of `n` training records."""
    return Path(artifact).parent / "curve" / f"n{n}"


def _save_branches(result, artifact: Path) -> None:
    """Each decay branch's weights as an adapter of its own (same config as `artifact`)."""
    if not result.branches:
        return
    import torch

    params = dict(result.model.named_parameters())
    final = {name: params[name].detach().clone() for name in next(iter(result.branches.values()))}
    with torch.no_grad():
        for n, weights in result.branches.items():
            for name, value in weights.items():
                params[name].copy_(value)
            result.model.save_pretrained(branch_dir(artifact, n))
        for name, value in final.items():
            params[name].copy_(value)


@register("lora")
class LoRA(FineTune):
    method = "lora"


@register("full_ft")
class FullFineTune(FineTune):
    method = "full"
