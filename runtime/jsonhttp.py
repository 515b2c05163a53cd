"""A quiet HTTP request handler that answers in JSON: the base of Halo's loopback servers."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler


class JSONHandler(BaseHTTPRequestHandler):
    """Subclasses implement do_GET/do_POST and answer with `send_json`; requests are not logged.

    TCP_NODELAY: the headers and the body go out in two writes, and with Nagle's algorithm the body waited
    for the client's delayed ACK of the headers (about 40 ms on Linux loopback, on every answer)."""

    disable_nagle_algorithm = True

    def send_json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args) -> None:  # errors travel in the responses
        pass
