"""SQLite store of profiles, candidate results and runs: the cache that makes runs resumable.

Every stage writes its result under a key that hashes everything it depends on (data, task,
settings, model, seed), so a re-run finds finished work and a report can be rebuilt without
recomputing. One table, JSON values: simple to inspect with the sqlite3 shell.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (kind, key)
)
"""


def make_key(*parts) -> str:
    """A stable hash of JSON-serialisable parts."""
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class Store:
    def __init__(self, root: str | Path = ".tunewise"):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "store.sqlite"
        self._db = sqlite3.connect(self.path, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(SCHEMA)
        self._db.commit()

    def get(self, kind: str, key: str):
        row = self._db.execute("SELECT value FROM entries WHERE kind=? AND key=?", (kind, key)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, kind: str, key: str, value) -> None:
        self._db.execute("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?)",
                         (kind, key, json.dumps(value, default=str, ensure_ascii=False), time.time()))
        self._db.commit()

    def keys(self, kind: str) -> list[str]:
        return [k for (k,) in self._db.execute("SELECT key FROM entries WHERE kind=? ORDER BY created", (kind,))]

    def close(self) -> None:
        self._db.close()
