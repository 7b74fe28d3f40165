"""The store under concurrency and kills: one process computes a shared entry while the others wait and
reuse it; a writer killed at random moments leaves complete report files and a sound database; stage
times survive a kill. (The full figures, with `tunewise run` itself, are in benchmarks/reliability.py.)"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

from pathlib import Path

import tunewise
from tunewise.clock import StageClock
from tunewise.store import Store

ENV = {**os.environ, "PYTHONPATH": str(Path(tunewise.__file__).parents[1])}  # this checkout's tunewise

CLAIM = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from tunewise.store import Store

    root = Path(sys.argv[1])
    def compute():
        with open(root / "computed.txt", "a") as f:
            f.write(sys.argv[2] + "\\n")
        time.sleep(1.0)
        return {"by": sys.argv[2]}
    print(Store(root / "store").cached("profile", "k", compute)["by"])
""")


def test_three_processes_compute_a_shared_entry_once(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", CLAIM, str(tmp_path), str(i)], stdout=subprocess.PIPE, text=True,
                              env=ENV)
             for i in range(3)]
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    computed = (tmp_path / "computed.txt").read_text().split()
    assert len(computed) == 1 and outputs == computed * 3  # one computed it, all three got its value


WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from tunewise.report import write_report
    from tunewise.config import BUDGETS
    from tunewise.results import RunResults
    from tunewise.store import Store

    root = Path(sys.argv[1])
    store = Store(root / "store")
    n = len(store.keys("candidate"))
    results = RunResults(tunewise_version="t", run_id="run", created="now", task={"name": "x" * 5000},
                         budget=BUDGETS["quick"], split={"train": 8, "test": 4, "source": "test file", "seed": 0})
    ready = False
    while True:
        store.put("candidate", f"{n:06d}", {"i": n, "payload": "y" * 2000})
        results.environment = {"writes": n}
        write_report(results, root / "run")
        if not ready:
            print("ready", flush=True)
            ready = True
        n += 1
""")


def test_a_writer_killed_at_random_moments_leaves_whole_files_and_a_sound_store(tmp_path):
    rng = random.Random(15)
    for kill in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE,
                                text=True, env=ENV)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        results = json.loads((tmp_path / "run" / "results.json").read_text())  # complete, never half-written
        assert results["run_id"] == "run"
        assert (tmp_path / "run" / "report.html").read_text().rstrip().endswith("</html>")
        assert (tmp_path / "run" / "report.md").read_text().startswith("# tunewise report")
        with sqlite3.connect(tmp_path / "store" / "store.sqlite") as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            keys = [int(k) for (k,) in db.execute("SELECT key FROM entries ORDER BY key")]
        assert keys == list(range(len(keys)))  # nothing missing, nothing twice
        assert results["environment"]["writes"] <= keys[-1]


def test_stage_seconds_survive_a_kill_and_restart_after_completion(tmp_path, monkeypatch):
    import tunewise.clock as clock_module

    now = [0.0]
    monkeypatch.setattr(clock_module.time, "perf_counter", lambda: now[0])
    store = Store(tmp_path / "store")
    first = StageClock(store, "run", first="profile")
    now[0] = 10.0
    first.lap("profile", then="bakeoff")
    now[0] = 16.0
    first.beat()  # progress inside the bake-off, then the process is killed
    second = StageClock(store, "run", first="profile")
    now[0] = 20.0
    second.lap("profile", then="bakeoff")  # cached: 4 s of start-up
    now[0] = 50.0
    second.lap("bakeoff")
    assert second.finish() == {"profile": 14.0, "bakeoff": 36.0}
    assert StageClock(store, "run").totals() == {}  # the run completed: a new one starts from zero
