"""Progress and messages on the terminal (rich), silent when asked to be."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, \
    TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


class Progress:
    """Steps and progress bars for long work; `quiet` keeps stderr clean (for --json)."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.on_activity = None  # called on every note and bar step (the run's stage clock saves its time)

    def note(self, message: str) -> None:
        self._active()
        if not self.quiet:
            console.print(message)

    def _active(self) -> None:
        if self.on_activity is not None:
            self.on_activity()

    @contextmanager
    def task(self, description: str, total: int):
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
