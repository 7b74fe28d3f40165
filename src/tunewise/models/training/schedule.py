"""Learning-rate schedules, and where the learning curve's decay branches leave the run.

- linear: warm-up, then linear decay to the end (transformers' linear schedule).
- wsd (warmup-stable-decay): warm-up, the peak rate, then a decay over the last `decay_share` of
  the steps, linear or `1-sqrt` (`decay_shape`; Hägele et al. found 1-sqrt better, linear is the one
  measured here: benchmarks/results/curve.md). A run at the peak rate can be stopped at any step with a short decay of its own and
  gives a model comparable to one trained to that step with its own schedule (MiniCPM; Hägele et
  al. 2024, "Scaling laws and compute-optimal training beyond fixed training durations"). That is
  what the decay branches use: with nested subsets in the first epoch, the branch for subset k
  forks `decay_share` of subset k's steps before its end, decays through the rest of subset k's
  batches, and is kept; the main run goes on from the fork as if nothing happened.

On the few dozen steps of a small fine-tuning run a branch is not the same model as a run on its
subset with the linear schedule: summed over its steps, the branch's rate is about 0.8-0.9 of the
peak per step, the linear run's about 0.5 (the demo's 1/2 point, 34 steps: 30.0 with decay_share 0.2,
28.5 with 0.3, against 17.0). benchmarks/curve.py measures whether their scores still agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch


def decay_steps(total: int, share: float) -> int:
    return max(1, round(share * total))


def decayed(left: float, shape: str) -> float:
    """Multiplier during a decay with `left` (1 down to 0) of it still to go: linear, or 1-sqrt
    (Hägele et al. 2024: stays lower for longer, found better than linear)."""
    return left if shape == "linear" else 1.0 - (1.0 - left) ** 0.5


def lr_factor(step: int, *, total: int, warmup: int, schedule: str, decay_share: float,
              decay_shape: str = "linear") -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based)."""
    if step < warmup:
        return step / max(1, warmup)  # the first warm-up step has lr 0, as in transformers
    if schedule == "linear":
        return max(0.0, (total - step) / max(1, total - warmup))
    decay = decay_steps(total, decay_share)
    return 1.0 if step < total - decay else decayed(max(0.0, (total - step) / decay), decay_shape)


def scheduler(optimizer, *, total: int, warmup_ratio: float, schedule: str, decay_share: float,
              decay_shape: str = "linear"):
    # warm-up rounded down: the schedule's first warm-up step has lr 0, a lost step on a short run
    return torch.optim.lr_scheduler.LambdaLR(optimizer, partial(
        lr_factor, total=total, warmup=int(warmup_ratio * total), schedule=schedule, decay_share=decay_share,
        decay_shape=decay_shape))


@dataclass(frozen=True)
class Branch:
    """A decay branch: from optimizer step `fork` to step `end` (exclusive) of the first epoch."""

    size: int  # training examples in the subset it stands for (the key of its weights)
    fork: int
    end: int
    shape: str = "linear"

    def factor(self, step: int, at_fork: float) -> float:
        """Decay from the main run's rate at the fork (`at_fork`), ending where the run's own decay ends."""
        return at_fork * decayed((self.end - step) / (self.end - self.fork), self.shape)


def branches(sizes: list[int], covered: list[int], decay_share: float, epochs: int,
             shape: str = "linear") -> list[Branch]:
    """One branch per nested subset; the whole set needs none in a one-epoch run, where the run's own
    decay ends at the same place. `covered[k]`: steps that cover subset k in the first epoch."""
    out = []
    for size, end in zip(sizes, covered, strict=True):
        if end == covered[-1] and epochs == 1:
            continue
        out.append(Branch(size=size, fork=end - decay_steps(end, decay_share), end=end, shape=shape))
    return out
