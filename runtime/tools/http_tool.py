"""HTTP tool: httpx with timeouts, bounded retries for idempotent methods, and confined redirects."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from halo.types import DEFAULT_TIMEOUT_S as _DEFAULTS
from halo.types import REDIRECT_POLICIES
from halo.urls import origin, with_query

from .errors import ToolError

__all__ = ["DEFAULT_TIMEOUT_S", "MAX_REDIRECTS", "HttpResult", "HttpTool"]

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
DEFAULT_TIMEOUT_S = _DEFAULTS["http"]
MAX_REDIRECTS = 5
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
    Redirects are followed by hand, at most MAX_REDIRECTS hops, as ``follow_redirects`` allows:
    ``same-origin`` (same scheme, host and port as the first request), ``any``, or ``none``.
    A non-2xx final response, a refused redirect or a transport failure raises ToolError.
    """

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, retries: int = 2, backoff_s: float = 0.2):
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._client = httpx.Client(timeout=timeout_s, follow_redirects=False)

    def request(
        self,
        method: str,
        url: str,
        query: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
        follow_redirects: str = "same-origin",
    ) -> HttpResult:
        """Send one request to `url` (already encoded) with `query` appended; ``body`` is JSON-encoded
        unless it is str or bytes."""
        url = with_query(url, query)
        if follow_redirects not in REDIRECT_POLICIES:
            raise ToolError(f"follow_redirects must be one of {', '.join(REDIRECT_POLICIES)}")
        method = method.upper()
        content = body if isinstance(body, str | bytes) else None
        payload = None if content is not None or body is None else body
        start = time.perf_counter()
        try:
            request = self._client.build_request(
                method,
                url,
                content=content,
                json=payload,
                headers=headers,
                timeout=self.timeout_s if timeout_s is None else timeout_s,
            )
        except httpx.HTTPError as e:  # an invalid URL or header
            raise ToolError(f"{method} {url} failed: {e}") from None
        first = origin(url)
        response = self._send(request)
        hops = 0
        while (nxt := response.next_request) is not None:
            if follow_redirects == "none" or (
                follow_redirects == "same-origin" and origin(str(nxt.url)) != first
            ):
                hint = '"same-origin"; "any" allows it' if follow_redirects == "same-origin" else '"none"'
                raise ToolError(
                    f"{method} {url} redirected (HTTP {response.status_code}) to {nxt.url}; "
                    f"not followed (follow_redirects = {hint})",
                    status=response.status_code,
                )
            if hops == MAX_REDIRECTS:
                raise ToolError(
                    f"{method} {url}: more than {MAX_REDIRECTS} redirects", status=response.status_code
                )
            response = self._send(nxt)
            hops += 1
        if not response.is_success:
            excerpt = response.text[:_EXCERPT]
            raise ToolError(
                f"{method} {url} returned HTTP {response.status_code}: {excerpt}",
                status=response.status_code,
                body=excerpt,
            )
        return HttpResult(response.status_code, _decode(response), time.perf_counter() - start)

    def _send(self, request: httpx.Request) -> httpx.Response:
        """One hop, with retries for idempotent methods."""
        attempts = 1 + (self.retries if request.method in IDEMPOTENT else 0)
        attempt = 0
        while True:
            try:
                response = self._client.send(request)
            except (httpx.ConnectError, httpx.TimeoutException) as e:
                if attempt + 1 >= attempts:
                    kind = "timed out" if isinstance(e, httpx.TimeoutException) else "connection failed"
                    raise ToolError(
                        f"{request.method} {request.url} {kind} after {attempt + 1} attempt(s): {e}"
                    ) from None
            except httpx.HTTPError as e:
                raise ToolError(f"{request.method} {request.url} failed: {e}") from None
            else:
                if response.status_code < 500 or attempt + 1 >= attempts:
                    return response
            attempt += 1
            time.sleep(self.backoff_s * 2 ** (attempt - 1))

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
