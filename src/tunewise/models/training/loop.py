"""The training loop: optimizer steps over the epochs' batches, decay branches for the learning
curve, validation and early stopping at each epoch end, checkpoints along the way.

Everything that changes while training is in `TrainState` (what a checkpoint saves); everything
fixed for the run is in `Run` (set up by `tunewise.models.train.train`)."""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from tunewise.models.training.batches import Item, collate
from tunewise.models.training.checkpoint import rng_state, set_rng_state
from tunewise.models.training.schedule import Branch


@dataclass
class TrainState:
    """Where a run stands. Plain values and tensors only: checkpoints load it with weights_only."""

    epoch: int = 0  # epochs finished
    batch: int = 0  # batches done in the current epoch
    step: int = 0  # optimizer steps done (all epochs)
    losses: list[dict] = field(default_factory=list)  # per finished epoch: epoch, train_loss, val_loss
    loss_sum: float = 0.0  # current epoch: summed token losses
    loss_tokens: int = 0
    tokens: int = 0  # non-pad tokens of the steps done
    train_seconds: float = 0.0  # time inside optimizer steps
    seconds: float = 0.0  # wall time of earlier calls, when resumed
    best_val: float | None = None
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None  # the best epoch's weights when not the last epoch
    bad_epochs: int = 0
    stop: bool = False  # early stopping decided
    branches: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # subset size -> weights
    branch_steps: int = 0
    branch_seconds: float = 0.0

    def as_dict(self) -> dict:
        return copy.deepcopy(dataclasses.asdict(self))

    @classmethod
    def fields(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}


@dataclass
class Run:
    """The fixed parts of one training run."""

    cfg: Any  # TrainConfig
    module: torch.nn.Module  # the CompletionLoss as accelerate prepared it (DDP, CUDA autocast)
    inner: torch.nn.Module  # the CompletionLoss itself
    accelerator: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    lr_factor: Callable[[int], float]  # the scheduler's multiplier at a step
    params: list[torch.nn.Parameter]
    trainable: dict[str, torch.nn.Parameter]
    train_items: list[Item]
    val_items: list[Item]
    pad_id: int
    epoch_batches: Callable[[int], list[list[int]]]  # epoch -> its batches of item indices
    loader: Callable[[list[list[int]]], Any]  # batches -> iterable of device batches (sharded)
    steps_per_epoch: int
    branches: list[Branch]
    save: Callable[[TrainState], None]  # writes a checkpoint (main process only)

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def device(self) -> torch.device:
        return self.accelerator.device


def train_epochs(run: Run, state: TrainState, on_step: Callable[[TrainState], None] | None = None,
                 on_epoch: Callable[[TrainState], None] | None = None) -> None:
    """Train from `state` to the last epoch or early stop; `on_step` is called after every optimizer
    step (after any checkpoint it wrote), `on_epoch` after every epoch end."""
    cfg = run.cfg
    last_save = time.perf_counter()
    while state.epoch < cfg.epochs and not state.stop:
        batches = run.epoch_batches(state.epoch)
        forks = {b.fork: b for b in run.branches} if state.epoch == 0 else {}
        for i, batch in enumerate(run.loader(batches)):
            if i < state.batch:
                continue  # done before the interruption
            branch = forks.get(i)
            if branch is not None and branch.size not in state.branches:
                decay_branch(run, state, branch, batches)
            t0 = time.perf_counter()
            loss = _step(run, batch)
            run.scheduler.step()
            n_loss = batch["targets"].numel()
            state.loss_sum += loss * n_loss
            state.loss_tokens += n_loss
            state.tokens += int(batch["attention_mask"].sum())
            state.train_seconds += time.perf_counter() - t0
            state.batch = i + 1
            state.step += 1
            due = (state.step % cfg.checkpoint_every == 0
                   or time.perf_counter() - last_save >= cfg.checkpoint_seconds)
            if due and state.batch < run.steps_per_epoch:
                run.save(state)
                last_save = time.perf_counter()
            if on_step is not None:
                on_step(state)
        end_epoch(run, state)
        if on_epoch is not None:
            on_epoch(state)
        if state.epoch < cfg.epochs and not state.stop:
            run.save(state)
            last_save = time.perf_counter()


def _step(run: Run, batch: dict[str, torch.Tensor]) -> float:
    """One optimizer step (no scheduler step); returns the batch's mean loss."""
    loss = run.module(**batch)
    run.accelerator.backward(loss)
    run.accelerator.clip_grad_norm_(run.params, 1.0)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def decay_branch(run: Run, state: TrainState, branch: Branch, batches: list[list[int]]) -> None:
    """From the current step (the fork), decay the learning rate to zero through the rest of the
    branch's subset, keep the weights it reaches in `state.branches`, then put weights, optimizer
    and RNG back as they were at the fork: the main run continues exactly as without the branch."""
    t0 = time.perf_counter()
    weights = {n: p.detach().clone() for n, p in run.trainable.items()}
    optimizer = copy.deepcopy(run.optimizer.state_dict())
    rng = rng_state()
    at_fork = run.lr_factor(branch.fork)
    for step, indices in zip(range(branch.fork, branch.end), batches[branch.fork:branch.end], strict=True):
        for group, base in zip(run.optimizer.param_groups, run.scheduler.base_lrs, strict=True):
            group["lr"] = base * branch.factor(step, at_fork)
        batch = collate([run.train_items[i] for i in indices], run.pad_id)
        _step(run, {k: v.to(run.device) for k, v in batch.items()})
    state.branches[branch.size] = {n: p.detach().cpu().clone() for n, p in run.trainable.items()}
    with torch.no_grad():
        for name, value in weights.items():
            run.trainable[name].copy_(value)
    run.optimizer.load_state_dict(optimizer)
    set_rng_state(rng)
    state.branch_steps += branch.end - branch.fork
    state.branch_seconds += time.perf_counter() - t0


def end_epoch(run: Run, state: TrainState) -> None:
    """Train and validation loss of the epoch; the best epoch's weights kept; early stopping."""
    cfg, epoch = run.cfg, state.epoch
    sums = torch.tensor([state.loss_sum, state.loss_tokens], dtype=torch.float64, device=run.device)
    if run.world > 1:
        sums = run.accelerator.reduce(sums, reduction="sum")
    train_loss = float(sums[0] / max(sums[1], 1))
    val_loss = validate(run)
    state.losses.append({"epoch": float(epoch + 1), "train_loss": train_loss, "val_loss": val_loss})
    if val_loss is None:  # nothing to select on: the last epoch is kept
        state.best_epoch = epoch + 1
    elif state.best_val is None or val_loss < state.best_val:
        state.best_val, state.best_epoch, state.bad_epochs = val_loss, epoch + 1, 0
        state.best_state = ({n: p.detach().cpu().clone() for n, p in run.trainable.items()}
                            if epoch + 1 < cfg.epochs else None)
    else:
        state.bad_epochs += 1
        if state.bad_epochs >= cfg.patience and epoch + 1 < cfg.epochs:
            state.stop = True
    state.epoch, state.batch, state.loss_sum, state.loss_tokens = epoch + 1, 0, 0.0, 0


def validate(run: Run) -> float | None:
    """Mean completion-token loss over the validation items, shortest first, sharded over processes."""
    if not run.val_items:
        return None
    items, inner = run.val_items, run.inner
    inner.eval()
    order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
    size = max(1, run.cfg.batch_size * 2)
    batches = [order[i:i + size] for i in range(0, len(order), size)][run.accelerator.process_index::run.world]
    total = torch.zeros(2, dtype=torch.float64, device=run.device)
    with torch.no_grad():
        for b in batches:
            batch = {k: v.to(run.device) for k, v in collate([items[i] for i in b], run.pad_id).items()}
            total[0] += inner(**batch, reduction="sum").double()
            total[1] += batch["targets"].numel()
    total = run.accelerator.reduce(total, reduction="sum") if run.world > 1 else total
    inner.train()
    return float(total[0] / total[1])


def restore_best(run: Run, state: TrainState) -> None:
    """Put the best epoch's weights back when a later epoch was worse."""
    if state.best_epoch != len(state.losses) and state.best_state is not None:
        with torch.no_grad():
            for name, value in state.best_state.items():
                run.trainable[name].copy_(value.to(run.trainable[name].device))
