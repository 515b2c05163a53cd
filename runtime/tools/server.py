"""A small HTTP tool server on loopback, for benchmarks and imported templates.

`GET /sleep?s=N` waits N seconds (or, with `--gamma`, a Gamma-distributed time of mean N, as the
reference prototype simulated its tools) and echoes the query; `GET /health` answers ok.

    python -m halo.runtime.tools.server --port 8765 [--gamma] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from halo.runtime.jsonhttp import JSONHandler


class _Handler(JSONHandler):
    gamma = False
    rng = random.Random(0)
    lock = threading.Lock()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query))
        if url.path == "/health":
            return self.send_json(200, {"status": "ok"})
        if url.path != "/sleep":
            return self.send_json(404, {"error": f"no endpoint {url.path}"})
        try:
            mean = float(query.pop("s", "0"))
        except ValueError:
            return self.send_json(400, {"error": "s must be a number of seconds"})
        if mean < 0 or mean > 600:
            return self.send_json(400, {"error": "s must be between 0 and 600"})
        with self.lock:
            slept = self.rng.gammavariate(mean / 2, 2) if self.gamma and mean > 0 else mean
        time.sleep(slept)
        self.send_json(200, {"status": "ok", "slept_s": round(slept, 4), "query": query})


def serve(
    port: int = 8765, host: str = "127.0.0.1", gamma: bool = False, seed: int = 0
) -> ThreadingHTTPServer:
    """Start serving in a background thread; call `.shutdown()` on the result to stop."""
    handler = type("Handler", (_Handler,), {"gamma": gamma, "rng": random.Random(seed)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--gamma", action="store_true", help="Gamma-distributed sleeps of mean s")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    server = serve(args.port, gamma=args.gamma, seed=args.seed)
    print(f"serving on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()


if __name__ == "__main__":
    main()
