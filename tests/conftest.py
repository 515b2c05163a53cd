"""Shared fixtures: a loopback HTTP server whose replies depend on the request, and DuckDB dumps."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import duckdb
import pytest


class _Echo(BaseHTTPRequestHandler):
    """GET /echo/...: JSON of the path, the query, the x_tag header and a hash of the three.
    Any other path is a 404 with a short body."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlsplit(self.path)
        if not url.path.startswith("/echo/"):
            self._send(404, b"no such path")
            return
        query = sorted(parse_qsl(url.query, keep_blank_values=True))
        seen = [url.path, query, self.headers.get("x_tag")]
        body = {
            "path": url.path,
            "query": query,
            "tag": seen[2],
            "v": hashlib.sha256(json.dumps(seen).encode()).hexdigest()[:8],
        }
        self._send(200, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, body: bytes, kind: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="session")
def loopback():
    """Base URL (http://127.0.0.1:PORT) of the echo server, for the whole session."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def dump_duckdb(path) -> dict[str, list[tuple]]:
    """Every table of a DuckDB file with its rows, sorted (the state two runs must agree on)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        names = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables ORDER BY 1, 2"
        ).fetchall()
        return {
            f"{s}.{t}": sorted(con.execute(f"SELECT * FROM {_ident(s)}.{_ident(t)}").fetchall(), key=repr)
            for s, t in names
        }
    finally:
        con.close()


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@pytest.fixture
def dump_db():
    """`dump_duckdb` as a fixture (tests cannot import conftest)."""
    return dump_duckdb
