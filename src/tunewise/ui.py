"""Progress and messages on the terminal (rich), silent when asked to be."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, \
    TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)
# The Python API's progress: (message, fraction of the current step done, or None for a plain note).
ProgressCallback = Callable[[str, Optional[float]], None]


class Progress:
    """Steps and progress bars for long work; `quiet` keeps stderr clean (for --json). With a `listener`
    (the Python API's callback) nothing is printed: notes, warnings and bar steps go to it instead."""

    def __init__(self, quiet: bool = False, listener: ProgressCallback | None = None):
        self.quiet = quiet or listener is not None
        self.listener = listener
        self.on_activity = None  # called on every note and bar step (the run's stage clock saves its time)

    def note(self, message: str) -> None:
        self._active()
        if self.listener is not None:
            self.listener(message, None)
        elif not self.quiet:
            console.print(message)

    def warn(self, message: str, details: list[str] = ()) -> None:
        """What the user allowed but must not miss (skipped records, unseen labels), with its details."""
        self._active()
        if self.listener is not None:
            self.listener("\n  ".join([f"warning: {message}", *details]), None)
        else:  # printed even when quiet: stderr, beside --json's stdout
            console.print(f"warning: {message}", style="bold yellow", markup=False, highlight=False, soft_wrap=True)
            for line in details:
                console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)

    def _active(self) -> None:
        if self.on_activity is not None:
            self.on_activity()

    @contextmanager
    def task(self, description: str, total: int):
        if self.listener is not None:
            done = [0]

            def step(n=1):
                self._active()
                done[0] += n
                self.listener(description, min(1.0, done[0] / total) if total else None)

            yield step
            return
        if self.quiet:
            yield lambda n=1: self._active()
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("eta"), TimeRemainingColumn())
        with RichProgress(*columns, console=console, transient=True) as bar:
            tid = bar.add_task(description, total=total)
            def advance(n=1):
                self._active()
                bar.advance(tid, n)

            yield advance

    @property
    def callback(self):
        """For strategies: None when quiet, so they skip their own bars."""
        return None if self.quiet else self.note


def quiet_libraries() -> None:
    """What the CLI and the API set before any model loads: no hub access unless TUNEWISE_ONLINE is set
    (only what is installed is used), and the model libraries' logs and progress bars kept to errors."""
    import logging
    import os
    import warnings

    if not os.environ.get("TUNEWISE_ONLINE"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*past_key_values.*")
    for name in ("transformers", "peft", "accelerate", "sentence_transformers", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
