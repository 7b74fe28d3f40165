"""Supervised fine-tuning of a causal LM: LoRA (PEFT) or full, loss on the completion tokens only.

Fast on small CPUs and correct on CUDA and under `accelerate launch` (DDP):

- Each example is cut to `max_length` keeping its completion (the prompt loses its left part).
- Batches are length-grouped (seeded shuffle, then sorted within mega-batches) and right-padded.
- The LM head runs only where the loss is taken: the transformer body gives hidden states, the
  rows at completion positions are gathered and only those go through `lm_head` (the vocabulary
  projection over every position is a large share of the time for short completions).
- bf16: autocast on CUDA (through accelerate) and on CPUs with native bf16; trainable weights and
  the optimizer stay fp32. For LoRA on CPU the frozen Linear layers hold a bf16 copy of their
  weight while training (the precision autocast computes them in), which saves casting them at
  every step; the fp32 weights are put back at the end.
- Validation loss after every epoch drives early stopping; the best epoch's weights are kept.
- A checkpoint (trainable weights, optimizer, scheduler, RNG, position, losses) is written every
  `checkpoint_every` steps and at each epoch end; calling `train` again with the same `out_dir`
  continues from it. It is deleted once training finishes.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import math
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from tunewise.errors import ConfigError
from tunewise.models.load import body_and_head, pick_attention
from tunewise.results import EpochLoss

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"
_STATE = "state.pt"
MEGA_BATCH = 50  # length-sorting window, in batches


@dataclass
class Example:
    """One training item: the loss is taken on `completion_ids` only."""

    prompt_ids: list[int]
    completion_ids: list[int]


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
    seed: int = Field(0, description="seed for adapter init, batch order and dropout")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="compute dtype; auto: bf16 autocast on CUDA and on CPUs with native bf16, else fp32")
    checkpoint_every: int = Field(50, ge=1, description="optimizer steps between checkpoints")

    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 6e-4 if self.method == "lora" else 3e-5


@dataclass
class TrainResult:
    model: Any  # the trained model (a PeftModel for lora), in eval mode, best epoch's weights
    losses: list[EpochLoss]
    seconds: float  # wall time of the whole run (all calls when resumed)
    tokens: int  # non-pad tokens processed in training steps, summed over epochs and processes
    tokens_per_s: float  # tokens / time spent in training steps (validation and checkpoints excluded)
    peak_memory_mb: float  # CUDA: peak allocated; CPU: peak resident set of the process
    steps: int  # optimizer steps done (all calls)
    resumed_from_step: int | None = None
    checkpoint_refused: str | None = None  # why a checkpoint found in out_dir was not resumed from
    stopped_early: bool = False
    best_epoch: int = 0  # 1-based epoch whose weights the model holds


class _StopForTest(RuntimeError):
    """Raised by the test-only `_stop_after_steps` to simulate an interrupted run."""


# -- data --------------------------------------------------------------------------------------

def truncate(ex: Example, max_length: int) -> tuple[list[int], int]:
    """(token ids, prompt length): the completion is kept whole when it fits with one prompt token,
    the prompt is cut from the left; an over-long completion is cut from the right."""
    prompt, completion = list(ex.prompt_ids), list(ex.completion_ids)
    keep_prompt = 1 if prompt else 0  # the first completion token is predicted from the token before it
    if len(completion) > max_length - keep_prompt:
        completion = completion[:max_length - keep_prompt]
    room = max_length - len(completion)
    if len(prompt) > room:
        prompt = prompt[len(prompt) - room:]
    return prompt + completion, len(prompt)


def _prepare(examples: list[Example], max_length: int) -> list[tuple[list[int], int]]:
    items = [truncate(ex, max_length) for ex in examples]
    return [(ids, p) for ids, p in items if len(ids) - max(p, 1) > 0]  # at least one loss token


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int) -> list[list[int]]:
    """Seeded shuffle, sort by length within mega-batches, cut into batches, shuffle the batches
    and put the longest first (so an out-of-memory shows at once)."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    mega = MEGA_BATCH * batch_size
    batches = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start:start + mega], key=lambda i: -lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    if batches:
        longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
        batches[0], batches[longest] = batches[longest], batches[0]
    return batches


def collate(items: list[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ids and mask, plus the flat positions that carry loss and their next tokens."""
    width = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    index, targets = [], []
    for b, (ids, p) in enumerate(items):
        n = len(ids)
        input_ids[b, :n] = torch.tensor(ids, dtype=torch.long)
        mask[b, :n] = 1
        first = max(p, 1)
        index.extend(range(b * width + first - 1, b * width + n - 1))
        targets.extend(ids[first:n])
    return {"input_ids": input_ids, "attention_mask": mask,
            "loss_index": torch.tensor(index, dtype=torch.long), "targets": torch.tensor(targets, dtype=torch.long)}


class _Batches(torch.utils.data.Sampler):
    """A fixed list of index batches (a batch sampler accelerate can shard)."""

    def __init__(self, batches: list[list[int]], batch_size: int):
        self.batches, self.batch_size, self.drop_last = batches, batch_size, False

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


class _Items(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


# -- loss --------------------------------------------------------------------------------------

class CompletionLoss(torch.nn.Module):
    """Wraps a causal LM; forward returns the cross-entropy of the completion tokens.

    A module of its own so that DDP sees the call (its gradient sync hooks run in forward)."""

    def __init__(self, lm, autocast_dtype: torch.dtype | None = None):
        super().__init__()
        self.lm = lm
        self.autocast_dtype = autocast_dtype  # explicit CPU autocast (CUDA autocast comes from accelerate)
        parts = body_and_head(lm)
        self._parts = parts  # a tuple: not registered twice as submodules

    @property
    def fast(self) -> bool:
        return self._parts is not None

    def forward(self, input_ids, attention_mask, loss_index, targets, reduction: str = "mean"):
        ctx = (torch.autocast(input_ids.device.type, dtype=self.autocast_dtype) if self.autocast_dtype
               else contextlib.nullcontext())
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # no padding: plain causal attention is faster
        with ctx:
            if self._parts is not None:
                body, head = self._parts
                out = body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
                hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
                hidden = hidden.reshape(-1, hidden.size(-1)).index_select(0, loss_index)
                logits = head(hidden)
            else:
                out = self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
                logits = out.logits.reshape(-1, out.logits.size(-1)).index_select(0, loss_index)
        return torch.nn.functional.cross_entropy(logits.float(), targets, reduction=reduction)


def completion_loss(model, batch: dict[str, torch.Tensor], *, fast: bool = True) -> torch.Tensor:
    """Mean cross-entropy over the completion tokens of a collated batch (no autocast)."""
    module = CompletionLoss(model)
    if not fast:
        module._parts = None
    dev = next(model.parameters()).device
    return module(**{k: v.to(dev) for k, v in batch.items()})


class FastDropout(torch.nn.Module):
    """Dropout whose mask is cheap on CPU: 16-bit random lanes cut from 64-bit draws.

    torch's CPU dropout draws one random number per element on a single thread; for the seven LoRA
    inputs of every layer that costs more than the adapter matmuls. Same keep probability (to 1/65536),
    same scaling; other devices use the native dropout."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)
        self.threshold = -32768 + round(self.p * 65536)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return torch.nn.functional.dropout(x, self.p, True)
        n = x.numel()
        draws = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-2**63, None)
        keep = draws.view(torch.int16)[:n].view(x.shape) >= self.threshold
        return torch.where(keep, x * (1.0 / (1.0 - self.p)), 0.0)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _swap_dropout(model, fast: bool) -> list:
    """Replace the LoRA input dropouts by FastDropout (fast=True); returns what to put back."""
    swapped = []
    for module in model.modules():
        drops = getattr(module, "lora_dropout", None)
        if not isinstance(drops, torch.nn.ModuleDict):
            continue
        for key, drop in list(drops.items()):
            if fast and isinstance(drop, torch.nn.Dropout) and drop.p > 0:
                drops[key] = FastDropout(drop.p)
                swapped.append((drops, key, drop))
    return swapped


def _restore_dropout(swapped: list) -> None:
    for drops, key, drop in swapped:
        drops[key] = drop


# -- setup -------------------------------------------------------------------------------------

def _with_lora(model, cfg: TrainConfig):
    from peft import LoraConfig, PeftModel, get_peft_model
    from peft.tuners.lora import LoraLayer

    if isinstance(model, PeftModel):
        for name, p in model.named_parameters():
            p.requires_grad_("lora_" in name)
        return model
    if any(isinstance(m, LoraLayer) for m in model.modules()):
        raise ConfigError("the model already has LoRA layers injected (from an earlier train call)",
                          fix="pass a freshly loaded model, or the PeftModel returned before")
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in cfg.target_modules if t in present]
    if not targets:
        raise ConfigError(f"LoRA target_modules {cfg.target_modules} match no module of the model",
                          fix=f"pick from {sorted(present)[:20]}")
    lora = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                      task_type="CAUSAL_LM", bias="none", layers_to_transform=_adapted_layers(model, cfg))
    return get_peft_model(model, lora)


def _adapted_layers(model, cfg: TrainConfig) -> list[int] | None:
    """Indices of the top `layers_share` of the transformer layers; None: all of them."""
    n_layers = getattr(model.config, "num_hidden_layers", None)
    if cfg.layers_share >= 1 or not n_layers:
        return None
    return list(range(n_layers - max(1, math.ceil(n_layers * cfg.layers_share)), n_layers))


def lora_trainable_params(model, cfg: TrainConfig) -> int:
    """How many parameters LoRA will train, without injecting it: r * (in + out) for each targeted
    Linear in the adapted layers (the layer index is the number in the module's name, as for PEFT)."""
    layers = _adapted_layers(model, cfg)
    total = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name.rsplit(".", 1)[-1] not in cfg.target_modules:
            continue
        index = re.search(r"\.(\d+)\.", name)
        if layers is None or (index is not None and int(index.group(1)) in layers):
            total += cfg.r * (module.in_features + module.out_features)
    return total


def _mixed_precision(cfg: TrainConfig, on_cuda: bool) -> str:
    if cfg.dtype == "float32":
        return "no"
    if on_cuda:
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    from tunewise.models.load import cpu_has_bf16

    return "bf16" if cfg.dtype == "bfloat16" or cpu_has_bf16() else "no"


def _accelerator(cpu: bool, mixed_precision: str):
    """An Accelerator for this run; its shared state is reset when an earlier single-process run in
    this process used other settings (accelerate forbids changing them)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    kwargs = {"cpu": cpu, "mixed_precision": "no" if cpu else mixed_precision}
    try:
        return Accelerator(**kwargs)
    except ValueError:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(**kwargs)


def _set_attention(model, on_cuda: bool, max_length: int) -> None:
    """The attention kernel that trains fastest within memory on this device (see pick_attention)."""
    choice = pick_attention("cuda" if on_cuda else "cpu", max_length)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if choice and getattr(base.config, "_attn_implementation", None) != choice:
        base.set_attn_implementation(choice)


def _swap_frozen_linears(model, dtype: torch.dtype) -> list:
    """Give frozen Linear layers a copy of their weight in the autocast dtype for the run; returns what
    to put back. Autocast casts such weights at every use anyway (it caches casts only for weights
    that require grad) and keeps the casts for backward, so results and peak memory are the same
    and the per-step casts go. Weights shared with the input embedding stay: lookups are not autocast."""
    embedding = model.get_input_embeddings().weight if hasattr(model, "get_input_embeddings") else None
    swapped = []
    for module in model.modules():
        w = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Linear) and not w.requires_grad and w is not embedding and w.dtype != dtype:
            module.weight = torch.nn.Parameter(w.detach().to(dtype), requires_grad=False)
            swapped.append((module, w))
    return swapped


def _restore_linears(swapped: list) -> None:
    for module, weight in swapped:
        module.weight = weight


def _set_threads(world: int) -> None:
    if "OMP_NUM_THREADS" in os.environ:
        return
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // max(1, world)))


def _fingerprint(cfg: TrainConfig, train: list, val: list, world: int) -> str:
    h = hashlib.sha256(cfg.model_dump_json(exclude={"checkpoint_every"}).encode())
    h.update(f"|{world}|".encode())
    for items in (train, val):
        h.update(repr([(ids, p) for ids, p in items]).encode())
        h.update(b"/")
    return h.hexdigest()[:16]


def _trainable(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: Path, fingerprint: str, trainable: dict, state: dict) -> tuple[dict | None, str | None]:
    """(checkpoint, None) when `path` holds a checkpoint of this very run, else (None, why it was refused).

    Loaded with `weights_only=True`: only tensors and plain containers are unpickled, so a file placed
    in a shared or copied store can never run code. Anything else (another run's checkpoint, a
    truncated or foreign file) is refused in one line and training starts afresh."""
    import pickle

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError) as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"checkpoint {path} refused, starting afresh: not a tunewise checkpoint ({why[:160]})"
    expected = {"fingerprint", "weights", "optimizer", "scheduler", "rng", "state"}
    if not isinstance(saved, dict) or not expected <= set(saved):
        return None, f"checkpoint {path} refused, starting afresh: not a tunewise checkpoint (missing keys)"
    if saved["fingerprint"] != fingerprint:
        return None, f"checkpoint {path} ignored, starting afresh: made with another config or data"
    weights, rng = saved["weights"], saved["rng"]
    valid = (isinstance(weights, dict) and set(weights) == set(trainable)
             and all(isinstance(v, torch.Tensor) and v.shape == trainable[k].shape for k, v in weights.items())
             and isinstance(rng, dict) and isinstance(rng.get("torch"), torch.Tensor)
             and isinstance(saved["state"], dict) and set(saved["state"]) <= set(state))
    if not valid:
        return None, f"checkpoint {path} refused, starting afresh: its contents do not match this model"
    return saved, None


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _progress_bar(enabled: bool):
    if not enabled:
        return None
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), transient=False)


# -- training ----------------------------------------------------------------------------------

def train(model, tokenizer, train: list[Example], val: list[Example], cfg: TrainConfig, out_dir: Path, *,
          progress: bool = True, _stop_after_steps: int | None = None) -> TrainResult:
    """Fine-tune `model` on `train`, validating on `val` after each epoch; see the module docstring.

    `out_dir` holds the checkpoint while training runs (resumed when present and made by the same
    config and data). `_stop_after_steps` is for tests: raise after that many optimizer steps."""
    from transformers import get_linear_schedule_with_warmup

    started = time.perf_counter()
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / CHECKPOINT
    on_cuda = _use_cuda(model)
    precision = _mixed_precision(cfg, on_cuda)
    accelerator = _accelerator(cpu=not on_cuda, mixed_precision=precision)
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    if not on_cuda and world > 1:
        _set_threads(_local_world())  # processes share the cores: oversubscribed OpenMP threads crawl

    train_items = _prepare(train, cfg.max_length)
    val_items = _prepare(val, cfg.max_length)
    if not train_items:
        raise ConfigError("no training example has a completion token to learn", fix="check the data")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    _set_attention(model, on_cuda, cfg.max_length)
    if cfg.method == "lora":
        model = _with_lora(model, cfg)
    else:
        if any(p.dtype in (torch.float16, torch.bfloat16) for p in model.parameters()):
            model.float()  # AdamW on half-precision weights loses most small updates
        for p in model.parameters():
            p.requires_grad_(True)
    model.train()
    swapped = _swap_dropout(model, fast=not on_cuda)
    autocast = torch.bfloat16 if (not on_cuda and precision == "bf16") else None
    low_precision = _swap_frozen_linears(model, autocast) if autocast is not None and cfg.method == "lora" else []
    module = CompletionLoss(model, autocast_dtype=autocast)
    if not module.fast:
        log.info("model has no body/lm_head split: using the full forward for the loss")

    params = list(_trainable(model).values())
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr(),
                                  fused=on_cuda or None)

    lengths = [len(ids) for ids, _ in train_items]
    n_batches = math.ceil(len(train_items) / cfg.batch_size)
    steps_per_epoch = math.ceil(n_batches / world)
    total_steps = steps_per_epoch * cfg.epochs
    # warm-up rounded down: the schedule's first warm-up step has lr 0, a lost step on a short run
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)

    def loader(epoch: int):
        batches = length_grouped_batches(lengths, cfg.batch_size, cfg.seed * 1000 + epoch)
        dl = torch.utils.data.DataLoader(_Items(train_items), batch_sampler=_Batches(batches, cfg.batch_size),
                                         collate_fn=lambda items: collate(items, pad_id),
                                         generator=torch.Generator().manual_seed(cfg.seed))  # keeps the global RNG
        return accelerator.prepare_data_loader(dl)

    ddp_module, optimizer = accelerator.prepare(module, optimizer)
    device = accelerator.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    inner = accelerator.unwrap_model(ddp_module)  # the CompletionLoss (autocast-patched on CUDA)
    trainable = _trainable(inner.lm)

    # -- state, possibly from a checkpoint --
    fp = _fingerprint(cfg, train_items, val_items, world)
    st: dict[str, Any] = {"epoch": 0, "batch": 0, "step": 0, "losses": [], "loss_sum": 0.0, "loss_tokens": 0,
                          "tokens": 0, "train_seconds": 0.0, "seconds": 0.0, "best_val": None, "best_epoch": 0,
                          "best_state": None, "bad_epochs": 0, "stop": False}
    resumed_from, refused = None, None
    ckpt_file = ckpt_dir / _STATE
    if ckpt_file.is_file():
        saved, refused = load_checkpoint(ckpt_file, fp, trainable, st)
        if saved is not None:
            with torch.no_grad():
                for name, value in saved["weights"].items():
                    trainable[name].copy_(value)
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            _set_rng_state(saved["rng"])
            st.update(saved["state"])
            resumed_from = st["step"]
            log.info("resuming from %s at step %d", ckpt_file, resumed_from)
        else:
            log.warning("%s", refused)
    accelerator.wait_for_everyone()

    def save_checkpoint():
        if main:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            st["seconds"] = seconds_before + (time.perf_counter() - started)
            payload = {"fingerprint": fp, "weights": {n: p.detach().cpu().clone() for n, p in trainable.items()},
                       "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                       "rng": _rng_state(), "state": copy.deepcopy(st)}
            tmp = ckpt_dir / (_STATE + ".tmp")
            torch.save(payload, tmp)
            os.replace(tmp, ckpt_file)  # atomic: a crash never leaves a half-written checkpoint

    def validate() -> float | None:
        if not val_items:
            return None
        inner.eval()
        order = sorted(range(len(val_items)), key=lambda i: len(val_items[i][0]))
        vb = max(1, cfg.batch_size * 2)
        batches = [order[i:i + vb] for i in range(0, len(order), vb)][rank::world]
        total = torch.zeros(2, dtype=torch.float64, device=device)
        with torch.no_grad():
            for b in batches:
                batch = {k: v.to(device) for k, v in collate([val_items[i] for i in b], pad_id).items()}
                total[0] += inner(**batch, reduction="sum").double()
                total[1] += batch["targets"].numel()
        total = accelerator.reduce(total, reduction="sum") if world > 1 else total
        inner.train()
        return float(total[0] / total[1])

    seconds_before = st["seconds"]
    bar = _progress_bar(progress and main)
    task = None
    if bar is not None:
        bar.start()
        task = bar.add_task("fine-tuning", total=total_steps, completed=st["step"], loss="-", tps="-")
    try:
        while st["epoch"] < cfg.epochs and not st["stop"]:
            epoch = st["epoch"]
            dl = loader(epoch)
            for i, batch in enumerate(dl):
                if i < st["batch"]:
                    continue  # done before the interruption
                t0 = time.perf_counter()
                loss = ddp_module(**batch)
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                n_loss = batch["targets"].numel()
                st["loss_sum"] += float(loss.detach()) * n_loss
                st["loss_tokens"] += n_loss
                st["tokens"] += int(batch["attention_mask"].sum())
                st["train_seconds"] += time.perf_counter() - t0
                st["batch"] = i + 1
                st["step"] += 1
                if bar is not None:
                    bar.update(task, advance=1, loss=f"{st['loss_sum'] / st['loss_tokens']:.4f}",
                               tps=f"{st['tokens'] * world / max(st['train_seconds'], 1e-9):,.0f}")
                if st["step"] % cfg.checkpoint_every == 0 and st["batch"] < steps_per_epoch:
                    save_checkpoint()
                if _stop_after_steps is not None and st["step"] >= _stop_after_steps:
                    raise _StopForTest(f"stopped after {st['step']} steps")
            # -- epoch end --
            sums = torch.tensor([st["loss_sum"], st["loss_tokens"]], dtype=torch.float64, device=device)
            if world > 1:
                sums = accelerator.reduce(sums, reduction="sum")
            train_loss = float(sums[0] / max(sums[1], 1))
            val_loss = validate()
            st["losses"].append({"epoch": float(epoch + 1), "train_loss": train_loss, "val_loss": val_loss})
            if val_loss is None:  # nothing to select on: the last epoch is kept
                st["best_epoch"] = epoch + 1
            elif st["best_val"] is None or val_loss < st["best_val"]:
                st["best_val"], st["best_epoch"], st["bad_epochs"] = val_loss, epoch + 1, 0
                st["best_state"] = ({n: p.detach().cpu().clone() for n, p in trainable.items()}
                                    if epoch + 1 < cfg.epochs else None)
            else:
                st["bad_epochs"] += 1
                if st["bad_epochs"] >= cfg.patience and epoch + 1 < cfg.epochs:
                    st["stop"] = True
            st.update(epoch=epoch + 1, batch=0, loss_sum=0.0, loss_tokens=0)
            if bar is not None:
                shown = "-" if val_loss is None else f"{val_loss:.4f}"
                bar.update(task, description=f"epoch {epoch + 1}/{cfg.epochs} done, val loss {shown}")
            if st["epoch"] < cfg.epochs and not st["stop"]:
                save_checkpoint()
                if _stop_after_steps is not None and st["step"] >= _stop_after_steps:
                    raise _StopForTest(f"stopped after {st['step']} steps")
    finally:
        if bar is not None:
            bar.stop()
        _restore_dropout(swapped)
        _restore_linears(low_precision)

    # -- finish --
    last_epoch = len(st["losses"])
    if st["best_epoch"] != last_epoch and st["best_state"] is not None:
        with torch.no_grad():
            for name, value in st["best_state"].items():
                trainable[name].copy_(value.to(trainable[name].device))
    tokens = st["tokens"]
    train_seconds = st["train_seconds"]
    if world > 1:
        t = accelerator.reduce(torch.tensor([float(tokens), train_seconds], dtype=torch.float64, device=device),
                               reduction="sum")
        tokens, train_seconds = int(t[0]), float(t[1]) / world
    accelerator.wait_for_everyone()
    if main and ckpt_dir.exists():
        ckpt_file.unlink(missing_ok=True)
        (ckpt_dir / (_STATE + ".tmp")).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            ckpt_dir.rmdir()
    lm = inner.lm
    lm.eval()
    seconds = seconds_before + (time.perf_counter() - started)
    return TrainResult(
        model=lm, losses=[EpochLoss(**e) for e in st["losses"]], seconds=seconds, tokens=tokens,
        tokens_per_s=tokens / train_seconds if train_seconds > 0 else 0.0,
        peak_memory_mb=_peak_memory_mb(device), steps=st["step"], resumed_from_step=resumed_from,
        checkpoint_refused=refused,
        stopped_early=st["stop"], best_epoch=st["best_epoch"])


def _use_cuda(model) -> bool:
    """CUDA when the model is there, or when launched distributed on a CUDA machine without --cpu."""
    if next(model.parameters()).device.type == "cuda":
        return True
    cpu_forced = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return torch.cuda.is_available() and not cpu_forced and int(os.environ.get("WORLD_SIZE", "1")) > 1


def _is_main_process() -> bool:
    """From accelerate's state when set up (by train); else from the launcher's RANK, so that asking
    does not set up a process group."""
    from accelerate.state import PartialState

    if PartialState._shared_state:
        return PartialState().is_main_process
    return int(os.environ.get("RANK", "0")) == 0


def _local_world() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))


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
