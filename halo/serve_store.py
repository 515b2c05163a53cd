"""`halo serve`'s durable record of runs (sqlite, WAL, synchronous=FULL): what was accepted and what finished.

A run is one input of one served workflow. It is committed before the server answers 202, so an accepted
run survives any crash; its `row` (a sequence number per workflow) is the input's row in the executor's
journal, so a run resumed after a restart finds the calls it already made there. A finished run keeps its
record: the JSON text `halo run` would write for that input.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = "halo-serve-1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY,
  workflow TEXT NOT NULL,
  row INTEGER NOT NULL,
  size INTEGER NOT NULL,
  params TEXT NOT NULL,
  accepted REAL NOT NULL,
  finished REAL,
  record TEXT,
  UNIQUE (workflow, row)
);
CREATE INDEX IF NOT EXISTS runs_unfinished ON runs (workflow, row) WHERE finished IS NULL;
CREATE TABLE IF NOT EXISTS requests (
  workflow TEXT NOT NULL,
  key TEXT NOT NULL,
  ids TEXT NOT NULL,
  PRIMARY KEY (workflow, key)
);
"""


class StoreError(RuntimeError):
    """The state directory holds something that is not this server's store."""


@dataclass(frozen=True)
class Run:
    """An accepted input: `size` is the number of inputs its request carried (the admission priority)."""

    id: str
    workflow: str
    row: int
    size: int
    params: dict[str, Any]
    accepted: float  # wall-clock seconds (time.time())


class Store:
    """Thread-safe; every method commits before it returns."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        try:
            self.db.executescript(_SCHEMA)
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (FORMAT,))
            fmt = self.db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()[0]
        except sqlite3.DatabaseError as e:
            self.db.close()
            raise StoreError(f"{self.path} is not a halo serve store ({e})") from None
        if fmt != FORMAT:
            self.db.close()
            raise StoreError(f"{self.path} is a store of format {fmt!r}, not {FORMAT!r}")

    def accept(
        self, workflow: str, inputs: list[dict[str, Any]], key: str | None = None
    ) -> tuple[list[Run], bool]:
        """Give each input a run id and the workflow's next row numbers; durable when this returns.
        A request `key` (the client's Idempotency-Key) seen before returns that request's runs and False
        (nothing new accepted); otherwise the new runs and True."""
        now = time.time()
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                if key is not None:
                    seen = self.db.execute(
                        "SELECT ids FROM requests WHERE workflow = ? AND key = ?", (workflow, key)
                    ).fetchone()
                    if seen is not None:
                        self.db.execute("COMMIT")
                        return self._runs(json.loads(seen[0])), False
                last = self.db.execute(
                    "SELECT COALESCE(MAX(row), 0) FROM runs WHERE workflow = ?", (workflow,)
                ).fetchone()[0]
                runs = [
                    Run(secrets.token_hex(12), workflow, last + i, len(inputs), params, now)
                    for i, params in enumerate(inputs, start=1)
                ]
                self.db.executemany(
                    "INSERT INTO runs (id, workflow, row, size, params, accepted) VALUES (?, ?, ?, ?, ?, ?)",
                    [(r.id, workflow, r.row, r.size, json.dumps(r.params), now) for r in runs],
                )
                if key is not None:
                    self.db.execute(
                        "INSERT INTO requests VALUES (?, ?, ?)",
                        (workflow, key, json.dumps([r.id for r in runs])),
                    )
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return runs, True

    def request(self, workflow: str, key: str) -> list[Run] | None:
        """The runs a request with this Idempotency-Key was given, or None when the key is new."""
        with self.lock:
            seen = self.db.execute(
                "SELECT ids FROM requests WHERE workflow = ? AND key = ?", (workflow, key)
            ).fetchone()
            return None if seen is None else self._runs(json.loads(seen[0]))

    def _runs(self, ids: list[str]) -> list[Run]:
        """The runs of these ids, in that order (called under the lock)."""
        got = {
            r[0]: Run(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5])
            for r in self.db.execute(
                f"SELECT id, workflow, row, size, params, accepted FROM runs WHERE id IN ({','.join('?' * len(ids))})",
                ids,
            )
        }
        return [got[i] for i in ids]

    def finish(self, done: Iterable[tuple[str, str, float]]) -> None:
        """Store (run id, record JSON text, finished at) for runs not finished yet, in one commit."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany(
                    "UPDATE runs SET record = ?, finished = ? WHERE id = ? AND finished IS NULL",
                    [(record, at, run_id) for run_id, record, at in done],
                )
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def unfinished(self, workflow: str) -> list[Run]:
        """The workflow's accepted runs without a record, in row order (what a restart continues)."""
        with self.lock:
            rows = self.db.execute(
                "SELECT id, row, size, params, accepted FROM runs WHERE workflow = ? AND finished IS NULL "
                "ORDER BY row",
                (workflow,),
            ).fetchall()
        return [Run(i, workflow, row, size, json.loads(p), at) for i, row, size, p, at in rows]

    def get(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The runs among `ids` that exist: workflow, row, accepted, finished (None while unfinished), record."""
        found: dict[str, dict[str, Any]] = {}
        with self.lock:
            for run_id in ids:
                row = self.db.execute(
                    "SELECT workflow, row, accepted, finished, record FROM runs WHERE id = ?", (run_id,)
                ).fetchone()
                if row is not None:
                    found[run_id] = dict(
                        zip(("workflow", "row", "accepted", "finished", "record"), row, strict=True)
                    )
        return found

    def close(self) -> None:
        with self.lock:
            self.db.close()
