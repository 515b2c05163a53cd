"""Throw-away PostgreSQL clusters for tests.

``with throwaway_postgres() as dsn:`` runs initdb in a temporary directory (as the ``postgres``
user via ``runuser`` when running as root), starts the server on a free loopback port with
fsync off, yields a libpq DSN and removes everything afterwards. Without PostgreSQL server
binaries it calls ``pytest.skip``. ``postgres_dsn`` is the same as a session-scoped fixture.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

__all__ = ["create_database", "find_pg_bin", "postgres_dsn", "throwaway_postgres"]


def find_pg_bin() -> str | None:
    """Directory holding initdb and pg_ctl: $HALO_PG_BIN, Debian's layout, or PATH."""
    candidates = [os.environ.get("HALO_PG_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)
    initdb = shutil.which("initdb")
    candidates.append(os.path.dirname(os.path.realpath(initdb)) if initdb else "")
    for path in filter(None, candidates):
        if all(os.access(os.path.join(path, b), os.X_OK) for b in ("initdb", "pg_ctl")):
            return path
    return None


def _version(path: str) -> int:
    part = path.split("/")[-2]
    return int(part) if part.isdigit() else 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def throwaway_postgres(user: str = "halo") -> Iterator[str]:
    """Start a private PostgreSQL server and yield its DSN (database ``postgres``)."""
    bindir = find_pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found")
    prefix: list[str] = []
    root = tempfile.mkdtemp(prefix="halo-pg-")
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            pytest.skip("running as root and there is no 'postgres' user for initdb")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data = os.path.join(root, "data")

    def pg(*args: str) -> None:
        subprocess.run(prefix + list(args), check=True, capture_output=True, text=True)

    try:
        pg(f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", user, "-E", "UTF8", "--locale=C", "--no-sync")
        for attempt in range(3):
            port = _free_port()
            opts = (
                f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                pg(f"{bindir}/pg_ctl", "-D", data, "-o", opts, "-l", f"{root}/server.log", "-w", "start")
                break
            except subprocess.CalledProcessError:
                if attempt == 2:
                    raise
        try:
            yield f"host=127.0.0.1 port={port} user={user} dbname=postgres"
        finally:
            pg(f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def create_database(dsn: str, name: str) -> str:
    """CREATE DATABASE ``name`` on the server of ``dsn``; return the DSN for it."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as con:
        con.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return psycopg.conninfo.make_conninfo(dsn, dbname=name)


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """Session-wide throw-away PostgreSQL server (skips when PostgreSQL is missing)."""
    with throwaway_postgres() as dsn:
        yield dsn
