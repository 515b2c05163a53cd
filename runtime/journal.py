"""A durable journal (sqlite, WAL) of finished calls and finished inputs, so that a crash loses nothing.

- `calls`: results of mergeable calls by call key (recomputing one after a crash would only cost time).
- `effects`: per-input calls that must never repeat (writes, impure tools, sampled LLM calls). An intent
  row is committed before the call runs; a call found as intent-only on resume is reported, not repeated.
- `outputs`: one record per finished input; the output file is rebuilt from here on resume.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, value TEXT, error TEXT);
CREATE TABLE IF NOT EXISTS effects (node TEXT, row INTEGER, state TEXT, value TEXT, error TEXT,
                                    PRIMARY KEY (node, row));
CREATE TABLE IF NOT EXISTS outputs (row INTEGER PRIMARY KEY, record TEXT);
"""


class Journal:
    def __init__(self, path: str | Path, fingerprint: str, resume: bool):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and not resume:
            path.unlink()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        self.lock = threading.Lock()
        self._pending = 0
        self._last_commit = time.monotonic()
        old = self.db.execute("SELECT value FROM meta WHERE key='fingerprint'").fetchone()
        if old and old[0] != fingerprint:
            raise JournalMismatch("the journal belongs to another workflow or input file; "
                                  "run without --resume to start over")
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('fingerprint', ?)", (fingerprint,))
        self.db.execute("BEGIN")

    # -- mergeable calls --------------------------------------------------------------------------------
    def get_call(self, key: str) -> tuple[Any, str | None] | None:
        with self.lock:
            row = self.db.execute("SELECT value, error FROM calls WHERE key=?", (key,)).fetchone()
        return None if row is None else (json.loads(row[0]) if row[0] is not None else None, row[1])

    def put_call(self, key: str, value: Any, error: str | None) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO calls VALUES (?, ?, ?)",
                            (key, None if error else json.dumps(value, default=str), error))
            self._tick()

    # -- calls that must not repeat ----------------------------------------------------------------------
    def get_effect(self, node: str, row: int) -> tuple[str, Any, str | None] | None:
        with self.lock:
            r = self.db.execute("SELECT state, value, error FROM effects WHERE node=? AND row=?",
                                (node, row)).fetchone()
        return None if r is None else (r[0], json.loads(r[1]) if r[1] is not None else None, r[2])

    def intent(self, node: str, row: int) -> None:
        """Durably note that a call is about to run (committed before it runs)."""
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO effects VALUES (?, ?, 'intent', NULL, NULL)", (node, row))
            self._commit()

    def put_effect(self, node: str, row: int, value: Any, error: str | None) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO effects VALUES (?, ?, 'done', ?, ?)",
                            (node, row, None if error else json.dumps(value, default=str), error))
            self._commit()

    # -- finished inputs ---------------------------------------------------------------------------------
    def put_output(self, row: int, record: dict[str, Any]) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO outputs VALUES (?, ?)", (row, json.dumps(record, default=str)))
            self._commit()

    def finished_rows(self) -> set[int]:
        with self.lock:
            return {r[0] for r in self.db.execute("SELECT row FROM outputs")}

    def outputs(self) -> Iterator[str]:
        with self.lock:
            rows = self.db.execute("SELECT record FROM outputs ORDER BY row").fetchall()
        for (record,) in rows:
            yield record

    def _tick(self) -> None:
        self._pending += 1
        if self._pending >= 256 or time.monotonic() - self._last_commit > 0.5:
            self._commit()

    def _commit(self) -> None:
        self.db.execute("COMMIT")
        self.db.execute("BEGIN")
        self._pending = 0
        self._last_commit = time.monotonic()

    def close(self) -> None:
        with self.lock:
            self.db.execute("COMMIT")
            self.db.close()


class JournalMismatch(RuntimeError):
    pass
