"""SQLite store of profiles, candidate results and runs: the cache that makes runs resumable.

Every stage writes its result under a key that hashes everything it depends on (data, task,
settings, model, seed), so a re-run finds finished work and a report can be rebuilt without
recomputing. One table, JSON values: simple to inspect with the sqlite3 shell.

Runs sharing a store coordinate through `cached`: the first to need an entry computes it under a
file lock (`<store>/locks/`, released by the OS even when the process is killed) and the others
wait and reuse it, so a profile or a candidate is computed once and a checkpoint folder has one
writer. A store that is not a readable database is reported, never replaced.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Callable

from tunewise.errors import TunewiseError

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (kind, key)
)
"""
STORE_FILE = "store.sqlite"


class StoreError(TunewiseError):
    """The store folder or its database cannot be used as it is."""


def make_key(*parts) -> str:
    """A stable hash of JSON-serialisable parts."""
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def check_store_dir(root: str | Path) -> Path:
    """The store folder, or a one-line error when it is a file or its database is not a file."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise StoreError(f"--store {root}: is a file, not a folder",
                         fix="pass a folder (it is created if absent), e.g. --store .tunewise")
    db = root / STORE_FILE
    if db.exists() and not db.is_file():
        raise StoreError(f"store {db}: is not a file", fix=f"move {db} aside")
    return root


class Store:
    def __init__(self, root: str | Path = ".tunewise"):
        self.root = check_store_dir(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"--store {self.root}: cannot be created ({exc.strerror or exc})",
                             fix="pass a folder you can write to") from exc
        self.path = self.root / STORE_FILE
        try:
            self._db = sqlite3.connect(self.path, timeout=60)
            with self._guard():
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(SCHEMA)
                self._db.commit()
                ok = self._db.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.OperationalError as exc:  # from connect(): the file cannot be opened at all
            raise StoreError(f"store {self.path}: cannot be opened ({exc})",
                             fix="check the folder's permissions, or pass another --store") from exc
        if ok != "ok":
            self._corrupt(ok)

    def _corrupt(self, reason: str):
        raise StoreError(f"store {self.path} is corrupt ({reason}); tunewise will not replace it",
                         fix=f"move it aside (mv {self.path} {self.path}.bad) and re-run, which starts an empty "
                             f"store, or pass another --store")

    @contextlib.contextmanager
    def _guard(self):
        """sqlite's 'not a database' / 'malformed' errors become the one-line corrupt-store error."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and not _corruption(exc):  # locked, read-only, disk full
                raise StoreError(f"store {self.path}: {exc}",
                                 fix="check the disk, the folder's permissions and other runs on this store") from exc
            self._corrupt(str(exc))

    def get(self, kind: str, key: str):
        with self._guard():
            row = self._db.execute("SELECT value FROM entries WHERE kind=? AND key=?", (kind, key)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, kind: str, key: str, value) -> None:
        with self._guard():
            self._db.execute("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?)",
                             (kind, key, json.dumps(value, default=str, ensure_ascii=False), time.time()))
            self._db.commit()

    def delete(self, kind: str, key: str) -> None:
        with self._guard():
            self._db.execute("DELETE FROM entries WHERE kind=? AND key=?", (kind, key))
            self._db.commit()

    def keys(self, kind: str) -> list[str]:
        with self._guard():
            return [k for (k,) in self._db.execute("SELECT key FROM entries WHERE kind=? ORDER BY created", (kind,))]

    @contextlib.contextmanager
    def lock(self, kind: str, key: str, on_wait: Callable[[], None] | None = None):
        """Hold an exclusive lock on (kind, key) across processes; `on_wait` is called once if another holds it."""
        folder = self.root / "locks"
        folder.mkdir(exist_ok=True)
        with open(folder / f"{kind}-{key}.lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    on_wait()
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def cached(self, kind: str, key: str, compute: Callable[[], object], on_wait: Callable[[], None] | None = None):
        """The stored value, else `compute()` stored: computed by one process at a time, so concurrent
        runs wait for the first and reuse its result instead of repeating the work."""
        hit = self.get(kind, key)
        if hit is not None:
            return hit
        with self.lock(kind, key, on_wait):
            hit = self.get(kind, key)  # another run may have finished it while we waited
            if hit is not None:
                return hit
            value = compute()
            self.put(kind, key, value)
            return value

    def save_run(self, run_id: str, folder: str | Path, results: dict) -> None:
        """A finished run's results under its unique id, found again by its folder (`run_in`). A run
        written again into the same folder replaces the earlier one's entry."""
        folder = str(Path(folder).resolve())
        previous = self.get("run_folder", make_key(folder))
        self.put("run", run_id, {"dir": folder, "results": results})
        self.put("run_folder", make_key(folder), {"dir": folder, "run_id": run_id})
        if previous and previous.get("run_id") != run_id:
            self.delete("run", previous["run_id"])

    def run_in(self, folder: str | Path) -> tuple[str, dict] | None:
        """(run id, entry) of the run last written into `folder`; None when none was."""
        folder = Path(folder).resolve()
        index = self.get("run_folder", make_key(str(folder)))
        candidates = [index["run_id"]] if index else []
        candidates.append(folder.name)  # written by 0.3.0, keyed by the folder's name: only if it is this folder
        for run_id in candidates:
            entry = self.get("run", run_id)
            if isinstance(entry, dict) and isinstance(entry.get("dir"), str) and Path(entry["dir"]).resolve() == folder:
                return run_id, entry
        return None

    def close(self) -> None:
        self._db.close()


def _corruption(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("malformed", "not a database", "corrupt"))
