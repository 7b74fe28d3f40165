"""Resumable training state on disk: trainable weights, optimizer, scheduler, RNG and the loop's
position, written atomically and read back only when it is this very run's and holds what it should."""

from __future__ import annotations

import hashlib
import os
import pickle
import random
from pathlib import Path

import torch

CHECKPOINT = "checkpoint"
STATE_FILE = "state.pt"


def fingerprint(cfg, train: list, val: list, world: int) -> str:
    """What makes a checkpoint this run's: the config (but how often it checkpoints), the process
    count and the truncated data."""
    h = hashlib.sha256(cfg.model_dump_json(exclude={"checkpoint_every", "checkpoint_seconds"}).encode())
    h.update(f"|{world}|".encode())
    for items in (train, val):
        h.update(repr([(ids, p) for ids, p in items]).encode())
        h.update(b"/")
    return h.hexdigest()[:16]


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_checkpoint(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written checkpoint


def remove_checkpoint(ckpt_dir: Path) -> None:
    (ckpt_dir / STATE_FILE).unlink(missing_ok=True)
    (ckpt_dir / (STATE_FILE + ".tmp")).unlink(missing_ok=True)
    try:
        ckpt_dir.rmdir()
    except OSError:
        pass


def _same_weights(weights, trainable: dict) -> bool:
    return (isinstance(weights, dict) and set(weights) == set(trainable)
            and all(isinstance(v, torch.Tensor) and v.shape == trainable[k].shape for k, v in weights.items()))


def load_checkpoint(path: Path, fingerprint: str, trainable: dict, state_fields) -> tuple[dict | None, str | None]:
    """(checkpoint, None) when `path` holds a checkpoint of this very run, else (None, why it was refused).

    Loaded with `weights_only=True`: only tensors and plain containers are unpickled, so a file placed
    in a shared or copied store can never run code. Anything else (another run's checkpoint, a
    truncated or foreign file, a loop state with unknown fields or weights of other shapes) is refused
    in one line and training starts afresh."""
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
    rng, state = saved["rng"], saved["state"]
    valid = (_same_weights(saved["weights"], trainable)
             and isinstance(rng, dict) and isinstance(rng.get("torch"), torch.Tensor)
             and isinstance(state, dict) and set(state) <= set(state_fields)
             and (state.get("best_state") is None or _same_weights(state["best_state"], trainable))
             and isinstance(state.get("branches", {}), dict)
             and all(_same_weights(w, trainable) for w in state.get("branches", {}).values()))
    if not valid:
        return None, f"checkpoint {path} refused, starting afresh: its contents do not match this model"
    return saved, None
