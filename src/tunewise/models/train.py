"""Supervised fine-tuning of a causal LM: LoRA (PEFT) or full, loss on the completion tokens only.

Fast on small CPUs and correct on CUDA and under `accelerate launch` (DDP):

- Each example is cut to `max_length` keeping its completion (the prompt loses its left part).
- Batches are length-grouped (seeded shuffle, then sorted within mega-batches) and right-padded.
- The LM head runs only where the loss is taken (see training/loss.py).
- bf16: autocast on CUDA (through accelerate) and on CPUs with native bf16; trainable weights and
  the optimizer stay fp32. For LoRA on CPU the frozen Linear layers hold a bf16 copy of their
  weight while training (the precision autocast computes them in), which saves casting them at
  every step; the fp32 weights are put back at the end.
- Validation loss after every epoch drives early stopping; the best epoch's weights are kept.
- A checkpoint (trainable weights, optimizer, scheduler, RNG, position, losses) is written every
  `checkpoint_every` steps and at each epoch end; calling `train` again with the same `out_dir`
  continues from it. It is deleted once training finishes.
- Learning curve from the same run: given nested subset sizes, the first epoch goes through the
  subsets in order and each subset gets a short decay branch whose weights are returned
  (training/schedule.py).

The pieces live in `tunewise.models.training`; this module sets a run up and finishes it.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from tunewise.errors import ConfigError
from tunewise.models.training.adapters import all_trainable, lora_trainable_params, trainable
from tunewise.models.training.adapters import with_lora as _with_lora  # the name tests and callers know
from tunewise.models.training.batches import (BatchList, Example, Items, collate, length_grouped_batches,
                                              nested_batches, prepare, truncate)
from tunewise.models.training.checkpoint import (CHECKPOINT, STATE_FILE, fingerprint, load_checkpoint,
                                                 remove_checkpoint, rng_state, set_rng_state, write_checkpoint)
from tunewise.models.training.loop import Run, TrainState, restore_best, train_epochs
from tunewise.models.training.loss import CompletionLoss, completion_loss
from tunewise.models.training.schedule import branches, scheduler
from tunewise.models.training.speed import (FastDropout, accelerator, local_world, mixed_precision, restore_dropout,
                                            restore_linears, set_attention, set_threads, swap_dropout, use_cuda)
from tunewise.models.training.speed import swap_frozen_linears as _swap_frozen_linears  # patched by a test
from tunewise.results import EpochLoss

__all__ = ["CompletionLoss", "Example", "FastDropout", "TrainConfig", "TrainResult", "TrainState", "collate",
           "completion_loss", "length_grouped_batches", "lora_trainable_params", "save_artifact", "train",
           "truncate"]

log = logging.getLogger(__name__)


class TrainConfig(BaseModel):
    """How to fine-tune. Defaults suit a small model on a small labelled set."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["lora", "full"] = Field("lora", description="lora: train low-rank adapters; full: all weights")
    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: int = Field(32, ge=1, description="LoRA alpha (the update is scaled by alpha / r)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the LoRA input (0: PEFT skips the "
                           "dropout op, about 20% faster on CPU)")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="module names that get LoRA adapters (those the model lacks are skipped)")
    layers_share: float = Field(1.0, gt=0.0, le=1.0, description="share of the transformer layers, counted from "
                                "the top, that get LoRA adapters; backward stops below them (0.5: about 1.5x "
                                "faster on CPU)")
    epochs: int = Field(1, ge=1, description="passes over the training data (fewer when stopping early)")
    learning_rate: float | None = Field(None, gt=0,
                                        description="peak learning rate; None: 6e-4 for lora, 3e-5 for full")
    batch_size: int = Field(8, ge=1, description="examples per optimizer step (per process)")
    max_length: int = Field(256, ge=2, description="tokens per example; the prompt is cut from the left to fit")
    patience: int = Field(1, ge=1, description="early stopping: epochs without a better validation loss")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay")
    warmup_ratio: float = Field(0.05, ge=0.0, le=1.0, description="share of the steps with a linear warm-up")
    schedule: Literal["linear", "wsd"] = Field(
        "linear", description="after the warm-up: linear decay to the end, or wsd (warmup-stable-decay): the "
        "peak rate, then linear decay over the last decay_share of the steps")
    decay_share: float = Field(0.3, gt=0.0, le=1.0, description="wsd and decay branches: share of the steps "
                               "spent decaying (0.3: the demo's one-pass curve agreed with separate trainings, "
                               "benchmarks/results/curve.md)")
    decay_shape: Literal["linear", "1-sqrt"] = Field(
        "linear", description="wsd and decay branches: how the rate falls to the end of a decay")
    nested_sizes: list[int] = Field(
        default_factory=list, description="learning curve: cumulative sizes of nested subsets of the training "
        "examples as given (the first n_1 are the smallest subset, ...; the last is all of them). The first "
        "epoch goes through the subsets in order and each gets a decay branch whose weights "
        "TrainResult.branches returns (not the whole set in a one-epoch run: that is the run itself)")
    seed: int = Field(0, description="seed for adapter init, batch order and dropout")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="compute dtype; auto: bf16 autocast on CUDA and on CPUs with native bf16, else fp32")
    checkpoint_every: int = Field(50, ge=1, description="optimizer steps between checkpoints")
    checkpoint_seconds: float = Field(
        60.0, gt=0, description="also a checkpoint when this many seconds passed since the last one, so that "
        "a kill on a small budget (fewer steps than checkpoint_every) does not restart from step 0")

    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 6e-4 if self.method == "lora" else 3e-5


@dataclass
class TrainResult:
    model: Any  # the trained model (a PeftModel for lora), in eval mode, best epoch's weights
    losses: list[EpochLoss]
    seconds: float  # wall time of the whole run (all calls when resumed), decay branches included
    tokens: int  # non-pad tokens processed in training steps, summed over epochs and processes
    tokens_per_s: float  # tokens / time spent in training steps (validation and checkpoints excluded)
    peak_memory_mb: float  # CUDA: peak allocated; CPU: peak resident set of the process
    steps: int  # optimizer steps done (all calls), decay branches not counted
    resumed_from_step: int | None = None
    checkpoint_refused: str | None = None  # why a checkpoint found in out_dir was not resumed from
    stopped_early: bool = False
    best_epoch: int = 0  # 1-based epoch whose weights the model holds
    branches: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # subset size -> trainable weights
    branch_steps: int = 0  # optimizer steps spent in decay branches
    branch_seconds: float = 0.0


def train(model, tokenizer, train: list[Example], val: list[Example], cfg: TrainConfig, out_dir: Path, *,
          progress: bool = True, on_step: Callable[[TrainState], None] | None = None) -> TrainResult:
    """Fine-tune `model` on `train`, validating on `val` after each epoch; see the module docstring.

    `out_dir` holds the checkpoint while training runs (resumed when present and made by the same
    config and data). `on_step(state)` is called after every optimizer step; an exception it raises
    stops training where it is (the last checkpoint stays)."""
    started = time.perf_counter()
    ckpt_file = Path(out_dir) / CHECKPOINT / STATE_FILE
    on_cuda = use_cuda(model)
    precision = mixed_precision(cfg.dtype, on_cuda)
    acc = accelerator(cpu=not on_cuda, mixed_precision=precision)
    world, main = acc.num_processes, acc.is_main_process
    if not on_cuda and world > 1:
        set_threads(local_world())

    train_items, ends = _nested_items(train, cfg, world)
    val_items = prepare(val, cfg.max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    set_attention(model, on_cuda, cfg.max_length)
    model = _with_lora(model, cfg) if cfg.method == "lora" else all_trainable(model)
    model.train()
    swapped = swap_dropout(model, fast=not on_cuda)
    autocast = torch.bfloat16 if (not on_cuda and precision == "bf16") else None
    low_precision = _swap_frozen_linears(model, autocast) if autocast is not None and cfg.method == "lora" else []
    module = CompletionLoss(model, autocast_dtype=autocast)
    if not module.fast:
        log.info("model has no body/lm_head split: using the full forward for the loss")

    params = list(trainable(model).values())
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr(), fused=on_cuda or None)
    lengths = [len(ids) for ids, _ in train_items]
    first_epoch, covered = nested_batches(lengths, ends, cfg.batch_size, cfg.seed * 1000)
    steps_per_epoch = -(-len(first_epoch) // world)
    total_steps = steps_per_epoch * cfg.epochs
    sched = scheduler(optimizer, total=total_steps, warmup_ratio=cfg.warmup_ratio, schedule=cfg.schedule,
                      decay_share=cfg.decay_share, decay_shape=cfg.decay_shape)

    def epoch_batches(epoch: int) -> list[list[int]]:
        return first_epoch if epoch == 0 else length_grouped_batches(lengths, cfg.batch_size, cfg.seed * 1000 + epoch)

    def loader(batches: list[list[int]]):
        dl = torch.utils.data.DataLoader(Items(train_items), batch_sampler=BatchList(batches, cfg.batch_size),
                                         collate_fn=lambda items: collate(items, pad_id),
                                         generator=torch.Generator().manual_seed(cfg.seed))  # keeps the global RNG
        return acc.prepare_data_loader(dl)

    ddp_module, optimizer = acc.prepare(module, optimizer)
    if acc.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(acc.device)
    inner = acc.unwrap_model(ddp_module)  # the CompletionLoss (autocast-patched on CUDA)
    weights = trainable(inner.lm)
    fp = fingerprint(cfg, train_items, val_items, world)

    state, resumed_from, refused = TrainState(), None, None
    if ckpt_file.is_file():
        saved, refused = load_checkpoint(ckpt_file, fp, weights, TrainState.fields())
        if saved is not None:
            with torch.no_grad():
                for name, value in saved["weights"].items():
                    weights[name].copy_(value)
            optimizer.load_state_dict(saved["optimizer"])
            sched.load_state_dict(saved["scheduler"])
            set_rng_state(saved["rng"])
            state = TrainState(**saved["state"])
            resumed_from = state.step
            log.info("resuming from %s at step %d", ckpt_file, resumed_from)
        else:
            log.warning("%s", refused)
    acc.wait_for_everyone()
    seconds_before = state.seconds

    def save(st: TrainState) -> None:
        if main:
            st.seconds = seconds_before + (time.perf_counter() - started)
            write_checkpoint(ckpt_file, {
                "fingerprint": fp, "weights": {n: p.detach().cpu().clone() for n, p in weights.items()},
                "optimizer": optimizer.state_dict(), "scheduler": sched.state_dict(), "rng": rng_state(),
                "state": st.as_dict()})

    run = Run(cfg=cfg, module=ddp_module, inner=inner, accelerator=acc, optimizer=optimizer, scheduler=sched,
              lr_factor=sched.lr_lambdas[0], params=params, trainable=weights, train_items=train_items,
              val_items=val_items, pad_id=pad_id, epoch_batches=epoch_batches, loader=loader,
              steps_per_epoch=steps_per_epoch,
              branches=(branches(cfg.nested_sizes, covered, cfg.decay_share, cfg.epochs, cfg.decay_shape)
                        if cfg.nested_sizes else []),
              save=save)
    bar = _ProgressBar(total_steps, cfg.epochs, world, state.step) if progress and main else None
    try:
        train_epochs(run, state, on_step=_both(bar.step if bar else None, on_step),
                     on_epoch=bar.epoch if bar else None)
    finally:
        if bar is not None:
            bar.stop()
        restore_dropout(swapped)
        restore_linears(low_precision)
    return _finish(run, state, ckpt_file, seconds_before + (time.perf_counter() - started), resumed_from, refused)


def _nested_items(examples: list[Example], cfg: TrainConfig, world: int) -> tuple[list, list[int]]:
    """Truncated items and where each nested subset ends among them ([all] without nesting)."""
    sizes = cfg.nested_sizes or [len(examples)]
    if cfg.nested_sizes and (sizes != sorted(set(sizes)) or sizes[0] < 1 or sizes[-1] != len(examples)):
        raise ConfigError(f"nested_sizes {cfg.nested_sizes} must increase and end at the {len(examples)} "
                          "training examples", fix="pass the cumulative sizes of the nested subsets")
    if cfg.nested_sizes and world > 1:
        raise ConfigError("nested subsets (learning-curve branches) need a single training process",
                          fix="train the learning curve without accelerate launch")
    items, ends, start = [], [], 0
    for end in sizes:
        items += prepare(examples[start:end], cfg.max_length)
        ends.append(len(items))
        start = end
    if not items:
        raise ConfigError("no training example has a completion token to learn", fix="check the data")
    if len(set(ends)) < len(ends):
        raise ConfigError(f"a nested subset of {cfg.nested_sizes} adds no example with a completion token",
                          fix="check the data")
    return items, ends


def _finish(run: Run, state: TrainState, ckpt_file: Path, seconds: float, resumed_from, refused) -> TrainResult:
    """Best epoch's weights back, totals over processes, checkpoint removed, the model in eval mode."""
    restore_best(run, state)
    acc, device = run.accelerator, run.device
    tokens, train_seconds = state.tokens, state.train_seconds
    if run.world > 1:
        t = acc.reduce(torch.tensor([float(tokens), train_seconds], dtype=torch.float64, device=device),
                       reduction="sum")
        tokens, train_seconds = int(t[0]), float(t[1]) / run.world
    acc.wait_for_everyone()
    if acc.is_main_process and ckpt_file.parent.exists():
        remove_checkpoint(ckpt_file.parent)
    lm = run.inner.lm
    lm.eval()
    return TrainResult(
        model=lm, losses=[EpochLoss(**e) for e in state.losses], seconds=seconds, tokens=tokens,
        tokens_per_s=tokens / train_seconds if train_seconds > 0 else 0.0,
        peak_memory_mb=_peak_memory_mb(device), steps=state.step, resumed_from_step=resumed_from,
        checkpoint_refused=refused, stopped_early=state.stop, best_epoch=state.best_epoch,
        branches=state.branches, branch_steps=state.branch_steps, branch_seconds=state.branch_seconds)


def _both(*callbacks):
    callbacks = [c for c in callbacks if c is not None]
    if not callbacks:
        return None

    def call(state: TrainState) -> None:
        for c in callbacks:
            c(state)
    return call


class _ProgressBar:
    """Steps, running loss and tokens/s on the console (rich)."""

    def __init__(self, total: int, epochs: int, world: int, done: int):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.world, self.epochs = world, epochs
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
                            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), transient=False)
        self.bar.start()
        self.task = self.bar.add_task("fine-tuning", total=total, completed=done, loss="-", tps="-")

    def step(self, st: TrainState) -> None:
        self.bar.update(self.task, completed=st.step, loss=f"{st.loss_sum / max(st.loss_tokens, 1):.4f}",
                        tps=f"{st.tokens * self.world / max(st.train_seconds, 1e-9):,.0f}")

    def epoch(self, st: TrainState) -> None:
        val = st.losses[-1]["val_loss"]
        shown = "-" if val is None else f"{val:.4f}"
        self.bar.update(self.task, description=f"epoch {st.epoch}/{self.epochs} done, val loss {shown}")

    def stop(self) -> None:
        self.bar.stop()


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _is_main_process() -> bool:
    """From accelerate's state when set up (by train); else from the launcher's RANK, so that asking
    does not set up a process group."""
    import os

    from accelerate.state import PartialState

    if PartialState._shared_state:
        return PartialState().is_main_process
    return int(os.environ.get("RANK", "0")) == 0


def save_artifact(result_model, tokenizer, out_dir: Path) -> Path:
    """Save the adapter (lora) or the whole model, with the tokenizer, to `out_dir`: loadable with
    peft's AutoPeftModelForCausalLM / transformers' from_pretrained. Only the main process writes."""
    out_dir = Path(out_dir)
    if not _is_main_process():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    model = result_model.module if hasattr(result_model, "module") and not hasattr(result_model, "save_pretrained") \
        else result_model
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
