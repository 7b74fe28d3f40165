"""Wall time per stage, added up over every invocation of one run, including killed ones.

A killed run resumed into the same `--out` reports the time all its invocations spent, not only the
last one's (which mostly reuses the store). The running totals live in the store under the run
folder and the run's settings; they are saved at each stage's end and, at most every SAVE_EVERY
seconds, on progress (so a kill loses at most that much), and deleted when the run completes.
"""

from __future__ import annotations

import time
from pathlib import Path

from tunewise.store import Store, make_key

KIND = "stage_seconds"
SAVE_EVERY = 5.0


class StageClock:
    def __init__(self, store: Store | None = None, key: str | None = None, first: str | None = None):
        self.store, self.key, self.current = store, key, first
        earlier = store.get(KIND, key) if store is not None and key else None
        self.earlier: dict[str, float] = (earlier or {}).get("done", {})
        for stage, seconds in ((earlier or {}).get("running") or {}).items():  # a stage a kill interrupted
            self.earlier[stage] = self.earlier.get(stage, 0.0) + seconds
        self.laps: dict[str, float] = {}
        self.stage_started = self.saved = time.perf_counter()

    @classmethod
    def for_run(cls, store: Store, out_dir: Path, *settings, first: str | None = None) -> "StageClock":
        return cls(store, make_key(str(Path(out_dir).resolve()), *settings), first)

    def lap(self, stage: str, then: str | None = None) -> None:
        """Close `stage` (timed since the last lap); `then` names the stage that starts now."""
        now = time.perf_counter()
        self.laps[stage] = self.laps.get(stage, 0.0) + now - self.stage_started
        self.stage_started, self.current = now, then
        self._save(running=None)

    def beat(self) -> None:
        """Progress inside the current stage: save its time so far, at most every SAVE_EVERY seconds."""
        now = time.perf_counter()
        if self.current and now - self.saved >= SAVE_EVERY:
            self._save(running={self.current: now - self.stage_started})

    def totals(self) -> dict[str, float]:
        """Every stage's seconds over all invocations, rounded for the report."""
        return {stage: round(seconds, 1) for stage, seconds in self._sums().items()}

    def _sums(self) -> dict[str, float]:
        names = list(self.earlier) + [s for s in self.laps if s not in self.earlier]
        return {s: self.earlier.get(s, 0.0) + self.laps.get(s, 0.0) for s in names}

    def finish(self) -> dict[str, float]:
        """The totals; the run is complete, so the next invocation starts from zero."""
        if self.store is not None and self.key:
            self.store.delete(KIND, self.key)
        return self.totals()

    def _save(self, running: dict[str, float] | None) -> None:
        self.saved = time.perf_counter()
        if self.store is not None and self.key:
            self.store.put(KIND, self.key, {"done": self._sums(), "running": running})
