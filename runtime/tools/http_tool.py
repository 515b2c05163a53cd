"""HTTP tool: httpx with timeouts and bounded retries for idempotent methods."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from .errors import ToolError

__all__ = ["HttpResult", "HttpTool"]

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_EXCERPT = 500


@dataclass(frozen=True)
class HttpResult:
    """A 2xx response: status, body (parsed JSON when the response is JSON, else text), seconds."""

    status: int
    body: Any
    seconds: float


class HttpTool:
    """Thread-safe HTTP client.

    Connect errors, timeouts and 5xx responses are retried ``retries`` times with exponential
    backoff (``backoff_s``, 2x, 4x ...) for idempotent methods only; POST/PATCH are sent once.
    A non-2xx final response or a transport failure raises ToolError.
    """

    def __init__(self, timeout_s: float = 10.0, retries: int = 2, backoff_s: float = 0.2):
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._client = httpx.Client(timeout=timeout_s, follow_redirects=True)

    def request(self, method: str, url: str, query: dict[str, Any] | None = None, body: Any = None,
                headers: dict[str, str] | None = None, timeout_s: float | None = None) -> HttpResult:
        """Send one request; ``body`` is JSON-encoded unless it is str or bytes."""
        method = method.upper()
        content = body if isinstance(body, str | bytes) else None
        payload = None if content is not None or body is None else body
        attempts = 1 + (self.retries if method in IDEMPOTENT else 0)
        start = time.perf_counter()
        for attempt in range(attempts):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = self._client.request(
                    method, url, params=query, content=content, json=payload, headers=headers,
                    timeout=self.timeout_s if timeout_s is None else timeout_s,
                )
            except (httpx.ConnectError, httpx.TimeoutException) as e:
                if attempt + 1 < attempts:
                    continue
                kind = "timed out" if isinstance(e, httpx.TimeoutException) else "connection failed"
                raise ToolError(f"{method} {url} {kind} after {attempt + 1} attempt(s): {e}") from None
            except httpx.HTTPError as e:
                raise ToolError(f"{method} {url} failed: {e}") from None
            if response.status_code >= 500 and attempt + 1 < attempts:
                continue
            break
        seconds = time.perf_counter() - start
        if not response.is_success:
            excerpt = response.text[:_EXCERPT]
            raise ToolError(f"{method} {url} returned HTTP {response.status_code}: {excerpt}",
                            status=response.status_code, body=excerpt)
        return HttpResult(response.status_code, _decode(response), seconds)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpTool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _decode(response: httpx.Response) -> Any:
    if "json" in response.headers.get("content-type", ""):
        try:
            return response.json()
        except ValueError:
            pass
    return response.text
