"""The journal under crashes and damage: in-doubt effects, missing or broken journals, input identity, locking."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from halo.runtime.journal import Journal, JournalError

FIXTURES = Path(__file__).parent / "runtime_fixtures"
ENV = {**os.environ, "PYTHONPATH": str(FIXTURES)}

# `slow` (pure) comes first in plan order, so it fills the tool pool (8 workers) and every INSERT waits
# in the pool's queue behind it: queued, not started.
QUEUED_WF = """
workflow w(item: int) {{
  db shop = duckdb("{db}")
  slow = py("rtfuncs:slow_double", x = item, delay = {delay}, pure = true)
  note = sql(shop, "INSERT INTO log VALUES (:r, 'seen')", r = item)
  return slow
}}
"""
# The effect itself is slow: at most the 8 running calls can be in doubt, never the queued ones.
SLOW_EFFECT_WF = """
workflow w(item: int) {{
  db shop = duckdb("{db}")
  note = sql(shop, "INSERT INTO log VALUES (:r, 'seen')", r = item)
  mark = py("rtfuncs:slow_double", x = item, delay = {delay})
  return mark
}}
"""


@pytest.fixture()
def setup(tmp_path):
    db = tmp_path / "shop.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE log (row_id INTEGER, note TEXT)")
    con.close()
    batch = tmp_path / "in.jsonl"
    batch.write_text("".join(json.dumps({"item": i}) + "\n" for i in range(1, 41)))
    return db, batch, tmp_path / "out.jsonl"


def halo_cmd(wf: Path, batch: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "halo", "run", str(wf), "-i", str(batch), "-o", str(out), "-q", *extra]


def start_and_kill(cmd: list[str], ready) -> None:
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and not ready():
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def finish(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=180)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def writes(db: Path) -> dict[int, int]:
    con = duckdb.connect(str(db))
    try:
        return dict(con.execute("SELECT row_id, count(*) FROM log GROUP BY row_id").fetchall())
    finally:
        con.close()


def test_effects_queued_but_not_started_are_not_in_doubt(setup):
    db, batch, out = setup
    wf = db.parent / "w.halo"
    wf.write_text(QUEUED_WF.format(db=db, delay=3.0))
    cmd = halo_cmd(wf, batch, out, "--window", "16")
    journal = out.with_name(out.name + ".journal")
    seen = []

    def ready():  # the run is under way, no INSERT has started (each `slow` takes 3 s)
        if journal.exists() and not seen:
            seen.append(time.time())
        return bool(seen) and time.time() - seen[0] > 1.0

    start_and_kill(cmd, ready)
    assert writes(db) == {}
    done = finish([*cmd, "--resume"])
    assert done.returncode == 0, done.stderr
    got = lines(out)
    assert [r["row"] for r in got] == list(range(1, 41)) and all(r["error"] is None for r in got)
    assert writes(db) == {i: 1 for i in range(1, 41)}
    assert "in doubt" not in done.stderr


def test_after_kill_9_only_running_effects_are_in_doubt_and_retry_runs_them(setup):
    db, batch, out = setup
    wf = db.parent / "w.halo"
    wf.write_text(SLOW_EFFECT_WF.format(db=db, delay=0.4))
    cmd = halo_cmd(wf, batch, out, "--window", "32")
    start_and_kill(cmd, lambda: out.exists() and len(out.read_text().splitlines()) >= 10)
    assert 10 <= len(out.read_text().splitlines()) < 40, "the run should have been killed midway"
    # The same crash state, resumed twice: as is, and with --retry-in-doubt (the journal is copied).
    other = out.with_name("retry.jsonl")
    for suffix in (".journal", ".journal-wal"):
        shutil.copy(out.with_name(out.name + suffix), other.with_name(other.name + suffix))
    done = finish([*cmd, "--resume"])
    assert done.returncode in (0, 1), done.stderr
    got = lines(out)
    assert [r["row"] for r in got] == list(range(1, 41))
    doubt = [r["row"] for r in got if r["error"]]
    assert len(doubt) <= 8  # the tool pool: at most 8 calls were running
    assert all("interrupted by a crash" in r["error"][0]["error"] for r in got if r["error"])
    assert (done.returncode == 1) == bool(doubt)
    if doubt:
        assert f"{len(doubt)} inputs in doubt" in done.stderr
    assert writes(db) == {i: 1 for i in range(1, 41)}  # the INSERT before the slow effect never repeats
    again = finish([*halo_cmd(wf, batch, other, "--window", "32"), "--resume", "--retry-in-doubt"])
    assert again.returncode == 0, again.stderr
    assert all(r["error"] is None for r in lines(other))  # the in-doubt calls ran again


@pytest.mark.parametrize(
    "damage, words",
    [
        ("missing", "no journal"),
        ("empty", "is empty"),
        ("garbage", "not a readable journal"),
        ("header", "fails its checksum"),
    ],
)
def test_resume_refuses_a_missing_or_damaged_journal(setup, damage, words):
    db, batch, out = setup
    wf = db.parent / "w.halo"
    wf.write_text(QUEUED_WF.format(db=db, delay=0.0))
    cmd = halo_cmd(wf, batch, out)
    journal = out.with_name(out.name + ".journal")
    if damage != "missing":
        assert finish(cmd).returncode == 0
    if damage == "empty":
        journal.write_bytes(b"")
    elif damage == "garbage":
        journal.write_bytes(os.urandom(8192))
    elif damage == "header":
        import sqlite3

        con = sqlite3.connect(journal)
        con.execute("UPDATE meta SET value = 'x' || value WHERE key = 'fingerprint'")
        con.commit()
        con.close()
    before = writes(db)
    done = finish([*cmd, "--resume"])
    assert done.returncode == 2 and words in done.stderr and str(journal) in done.stderr, done.stderr
    assert "internal error" not in done.stderr and writes(db) == before  # nothing was repeated


def test_resume_refuses_a_journal_whose_log_was_deleted_after_a_crash(setup):
    db, batch, out = setup
    wf = db.parent / "w.halo"
    wf.write_text(SLOW_EFFECT_WF.format(db=db, delay=0.1))
    cmd = halo_cmd(wf, batch, out, "--window", "4")
    start_and_kill(cmd, lambda: out.exists() and len(out.read_text().splitlines()) >= 4)
    wal = out.with_name(out.name + ".journal-wal")
    assert wal.exists()
    wal.unlink()
    before = writes(db)
    done = finish([*cmd, "--resume"])
    assert done.returncode == 2 and "write-ahead log" in done.stderr and "missing" in done.stderr, done.stderr
    assert writes(db) == before


def test_an_input_edited_in_place_with_the_same_size_and_mtime_is_noticed(setup):
    db, batch, out = setup
    wf = db.parent / "w.halo"
    wf.write_text(QUEUED_WF.format(db=db, delay=0.0))
    cmd = halo_cmd(wf, batch, out)
    assert finish(cmd).returncode == 0
    st = batch.stat()
    batch.write_text(batch.read_text().replace('{"item": 7}', '{"item": 9}'))
    os.utime(batch, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert batch.stat().st_size == st.st_size and batch.stat().st_mtime_ns == st.st_mtime_ns
    done = finish([*cmd, "--resume"])
    assert done.returncode == 2 and "belongs to another workflow or input" in done.stderr, done.stderr


def test_a_second_run_on_a_journal_in_use_gets_a_clear_error(setup):
    db, batch, out = setup
    wf = db.parent / "w.halo"
    wf.write_text(QUEUED_WF.format(db=db, delay=0.0))
    cmd = halo_cmd(wf, batch, out)
    assert finish(cmd).returncode == 0
    journal = out.with_name(out.name + ".journal")
    holder = _hold(journal)
    with pytest.raises(JournalError, match="in use by another halo run"):
        Journal(journal, "fp", resume=True)  # in one process too
    try:
        for extra in (["--resume"], []):  # neither a resume nor a fresh run may take it
            done = finish([*cmd, *extra])
            assert (
                done.returncode == 2 and f"in use by another halo run (pid {os.getpid()})" in done.stderr
            ), done.stderr
        assert len(lines(out)) == 40  # the fresh run did not wipe the journal or output
    finally:
        holder.close()
    assert finish([*cmd, "--resume"]).returncode == 0


def _hold(journal: Path) -> Journal:
    """Open the journal as a run would (same fingerprint as the CLI computed), holding its lock."""
    import sqlite3

    con = sqlite3.connect(journal)
    fp = con.execute("SELECT value FROM meta WHERE key='fingerprint'").fetchone()[0]
    con.close()
    return Journal(journal, fp, resume=True)
