"""A durable journal (sqlite, WAL) of finished calls and finished inputs, so that a crash loses nothing.

- `meta`: the header (format, fingerprint of the workflow and input, a checksum over both) and the
  state: 'open' while a run holds the journal, 'closed' after a clean close.
- `calls`: results of mergeable calls by call key (recomputing one after a crash would only cost time).
- `effects`: per-input calls that must never repeat (writes, impure tools, sampled LLM calls). An intent
  row is committed immediately before the call runs; a call found as intent-only on resume may have run.
- `outputs`: one record per finished (or rejected) input; the output file is rebuilt from here.

A run holds an exclusive lock (`JOURNAL.lock`) for as long as it has the journal open. A resume checks
that the journal exists, is a sound sqlite database with this header, and did not lose its write-ahead
log: the state 'open' is checkpointed into the main file, so 'open' with no `-wal` file beside it means
the log (the last writes) is gone.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from halo.runtime.records import dumps

FORMAT = "halo-journal-2"
_TABLES = {"meta", "calls", "effects", "outputs"}
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE calls (key TEXT PRIMARY KEY, value TEXT, error TEXT);
CREATE TABLE effects (node TEXT, row INTEGER, state TEXT, value TEXT, error TEXT, PRIMARY KEY (node, row));
CREATE TABLE outputs (row INTEGER PRIMARY KEY, record TEXT, failed INTEGER NOT NULL);
"""


class JournalMismatch(RuntimeError):
    """The journal belongs to another workflow or input (a user error)."""


class JournalError(JournalMismatch):
    """No usable journal where one is expected, or one another run holds (a user error)."""


def _checksum(fmt: str, fingerprint: str) -> str:
    return hashlib.sha256(f"{fmt}\x00{fingerprint}".encode()).hexdigest()


class Journal:
    def __init__(self, path: str | Path, fingerprint: str, resume: bool):
        self.path = path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lockfile = _acquire(path.with_name(path.name + ".lock"), path)
        try:
            if resume:
                self.db = _open_existing(path, fingerprint)
            else:
                for p in (path, _side(path, "-wal"), _side(path, "-shm")):
                    p.unlink(missing_ok=True)
                self.db = _connect(path)
                self.db.executescript(_SCHEMA)
                self.db.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [
                        ("format", FORMAT),
                        ("fingerprint", fingerprint),
                        ("checksum", _checksum(FORMAT, fingerprint)),
                    ],
                )
        except BaseException:
            self._lockfile.close()
            raise
        self.lock = threading.Lock()
        self._pending = 0
        self._last_commit = time.monotonic()
        self._state("open")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the main file itself now says 'open'
        self.db.execute("BEGIN")

    # -- mergeable calls --------------------------------------------------------------------------------
    def get_call(self, key: str) -> tuple[str | None, str | None] | None:
        """(value as JSON text, error) of a journaled call, or None."""
        with self.lock:
            row = self.db.execute("SELECT value, error FROM calls WHERE key=?", (key,)).fetchone()
        return None if row is None else (row[0], row[1])

    def put_call(self, key: str, text: str | None, error: str | None) -> None:
        """Store a call's result as JSON text (from `records.dumps`; None when it failed)."""
        with self.lock:
            self.db.execute(
                "INSERT OR REPLACE INTO calls VALUES (?, ?, ?)", (key, None if error else text, error)
            )
            self._tick()

    # -- calls that must not repeat ----------------------------------------------------------------------
    def get_effect(self, node: str, row: int) -> tuple[str, Any, str | None] | None:
        with self.lock:
            r = self.db.execute(
                "SELECT state, value, error FROM effects WHERE node=? AND row=?", (node, row)
            ).fetchone()
        return None if r is None else (r[0], json.loads(r[1]) if r[1] is not None else None, r[2])

    def intent(self, node: str, row: int) -> None:
        """Durably note that a call starts now (committed before it runs; thread-safe)."""
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO effects VALUES (?, ?, 'intent', NULL, NULL)", (node, row))
            self._commit()

    def put_effect(self, node: str, row: int, value: Any, error: str | None) -> None:
        with self.lock:
            self.db.execute(
                "INSERT OR REPLACE INTO effects VALUES (?, ?, 'done', ?, ?)",
                (node, row, None if error else dumps(value), error),
            )
            self._commit()

    # -- finished inputs ---------------------------------------------------------------------------------
    def put_output(self, row: int, record: dict[str, Any]) -> str:
        """Store an input's record (committed with the next batch: one lost in a crash is only recomputed,
        as its side effects are committed one by one); returns its JSON text."""
        text = dumps(record)
        with self.lock:
            self.db.execute(
                "INSERT OR REPLACE INTO outputs VALUES (?, ?, ?)", (row, text, int(bool(record["error"])))
            )
            self._tick()
        return text

    def is_finished(self, row: int) -> bool:
        with self.lock:
            return self.db.execute("SELECT 1 FROM outputs WHERE row=?", (row,)).fetchone() is not None

    def has_calls(self) -> bool:
        with self.lock:
            return self.db.execute("SELECT 1 FROM calls LIMIT 1").fetchone() is not None

    def count_failed(self) -> int:
        """Records with an error (failed or rejected inputs), this run's and earlier ones'."""
        with self.lock:
            return self.db.execute("SELECT count(*) FROM outputs WHERE failed = 1").fetchone()[0]

    def count_finished(self) -> int:
        with self.lock:
            return self.db.execute("SELECT count(*) FROM outputs").fetchone()[0]

    def outputs(self, chunk: int = 1000) -> Iterator[str]:
        """Every record's JSON text in row order, read in chunks (memory stays bounded)."""
        last = -(2**63)
        while True:
            with self.lock:
                rows = self.db.execute(
                    "SELECT row, record FROM outputs WHERE row > ? ORDER BY row LIMIT ?", (last, chunk)
                ).fetchall()
            if not rows:
                return
            for _, record in rows:
                yield record
            last = rows[-1][0]

    def _tick(self) -> None:
        self._pending += 1
        if self._pending >= 256 or time.monotonic() - self._last_commit > 0.5:
            self._commit()

    def _commit(self) -> None:
        self.db.execute("COMMIT")
        self.db.execute("BEGIN")
        self._pending = 0
        self._last_commit = time.monotonic()

    def _state(self, state: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('state', ?)", (state,))

    def close(self) -> None:
        with self.lock:
            self.db.execute("COMMIT")
            self._state("closed")
            self.db.close()
        self._lockfile.close()


def _side(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


def _acquire(lock_path: Path, journal: Path):
    """Hold an exclusive lock on the journal for this process, or say which process holds it."""
    f = open(lock_path, "a+")  # noqa: SIM115 - held until `close`
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise JournalError(
            f"{journal} is in use by another halo run (pid {holder}); wait for it to finish "
            "or write to another --output"
        ) from None
    f.truncate(0)
    f.write(str(os.getpid()))
    f.flush()
    return f


def _open_existing(path: Path, fingerprint: str) -> sqlite3.Connection:
    """Open a journal to resume; a missing, damaged or foreign one is a JournalError / JournalMismatch."""
    again = "run without --resume to start over"
    if not path.exists():
        raise JournalError(f"--resume: no journal at {path}; nothing to resume ({again})")
    if path.stat().st_size == 0:
        raise JournalError(f"--resume: the journal {path} is empty (damaged); {again}")
    wal_lost = not _side(path, "-wal").exists()
    try:
        db = _connect(path)
        ok = db.execute("PRAGMA quick_check").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall()) if "meta" in tables else {}
    except sqlite3.DatabaseError as e:
        raise JournalError(f"--resume: {path} is not a readable journal ({e}); {again}") from None
    if ok != "ok" or not _TABLES <= tables:
        db.close()
        raise JournalError(
            f"--resume: the journal {path} is damaged ({ok if ok != 'ok' else 'tables missing'}); {again}"
        )
    if meta.get("checksum") != _checksum(meta.get("format", ""), meta.get("fingerprint", "")):
        db.close()
        raise JournalError(
            f"--resume: the header of the journal {path} fails its checksum (damaged, or written "
            f"by another version of halo); {again}"
        )
    if meta.get("state") == "open" and wal_lost:
        db.close()
        raise JournalError(
            f"--resume: the write-ahead log {_side(path, '-wal')} of an interrupted run is "
            f"missing, so its last writes are lost; {again}"
        )
    if meta["fingerprint"] != fingerprint:
        db.close()
        raise JournalMismatch(f"the journal {path} belongs to another workflow or input file; {again}")
    return db
