"""The run command's flags, checked before any work: values from fixed sets, folders that can be written.

A bad flag must fail in the first second, not after the profile or the whole run.
"""

from __future__ import annotations

import tempfile
from enum import Enum
from pathlib import Path

from tunewise.errors import ConfigError


class FailOn(str, Enum):
    """When `--fail-on` makes the run exit 1 (a CI gate)."""

    below_target = "below-target"
    not_fine_tune = "not-fine-tune"
    fine_tune = "fine-tune"
    insufficient = "insufficient"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def choices(enum: type[Enum]) -> str:
    return " | ".join(e.value for e in enum)


def pick(flag: str, value: str, enum: type[Enum]):
    try:
        return enum(value)
    except ValueError:
        raise ConfigError(f"{flag} '{value}': unknown", fix=f"use one of {choices(enum).replace(' |', ',')}") from None


def parse_candidates(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise ConfigError(f"--candidates '{text}': no names", fix="e.g. --candidates majority,classical,lora")
    return names


def writable_folder(path: Path, flag: str) -> Path:
    """`path` is a folder, or can become one, that this process can write in. Nothing is created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path}: is a file, not a folder", fix=f"pass a folder to {flag}")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{flag} {path}: {existing} is a file, not a folder", fix=f"pass a folder to {flag}")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot write in {existing} ({exc.strerror or exc})",
                          fix=f"pass a folder you can write to {flag}") from exc
    return path


def check_run_flags(*, fail_on: str | None, device: str, target: float | None, models: list[str],
                    out: Path | None, store: Path) -> tuple[FailOn | None, Device]:
    """Every run flag that needs no data: raise ConfigError on the first bad one."""
    from tunewise.models.load import resolve
    from tunewise.store import check_store_dir

    gate = pick("--fail-on", fail_on, FailOn) if fail_on is not None else None
    dev = pick("--device", device, Device)
    if dev is Device.cuda:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: CUDA is not available here", fix="use --device cpu or auto")
    if target is not None and not 0 <= target <= 1:
        raise ConfigError(f"--target {target}: must be between 0 and 1", fix="give the score as a fraction, e.g. 0.85")
    for name in models:
        resolve(name)
    check_store_dir(store)
    writable_folder(store, "--store")
    if out is not None:
        writable_folder(out, "--out")
    return gate, dev


def check_gate(gate: FailOn | None, target: float | None) -> None:
    """--fail-on below-target compares with the target, so it needs one (from the task file or --target)."""
    if gate is FailOn.below_target and target is None:
        raise ConfigError("--fail-on below-target needs a target", fix="set target in the task file or pass --target")
