"""The GitHub client's HTTP layer: requests and responses on one aiohttp connection pool.

The client needs little of an HTTP library: send a request with its own headers, read a
whole JSON response, stream a blob, never follow a redirect, keep no cookies. `HttpWire`
does that directly on aiohttp. The client used to speak `httpx.AsyncClient` over an
aiohttp transport; httpx's request and response models, cookie jar and redirect machinery
cost ~0.55 ms of CPU per request on top of aiohttp's ~0.4 ms (a loopback micro-benchmark,
three rounds each). A run makes five requests (list artifacts, the artifact's 302, the
blob, the check run; polling amortised), so that was ~10 % of the worker's CPU in
`bench/github_ingest.py` (README, "Decisions").

Errors: every aiohttp or socket failure leaves as an `httpx.TransportError` subclass (the
family the client retries on and the queue runner counts as an outage), with the
failure's class name and no URL (a signed blob URL is a credential). Timeouts: one value
bounds connecting, each read, and (aiohttp has no write timeout) sending a request and
reading its headers, which together may take up to four times the value (`_phase_s`).
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import re
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import aiohttp
import httpx
from multidict import CIMultiDictProxy
from yarl import URL

_CHUNK_BYTES = 64 * 1024

ACCEPT_ENCODING = "gzip, deflate"
"""What every request accepts; aiohttp decodes both."""


def _transport_error(exc: BaseException, *, reading: bool) -> httpx.TransportError:
    """The httpx error for an aiohttp/socket failure (message: the failure's kind only)."""
    kind = type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(kind)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(kind)
    if isinstance(exc, TimeoutError):
        # The request phase's own bound (`_phase_s`), or a read past it.
        return httpx.ReadTimeout(kind) if reading else httpx.WriteTimeout(kind)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(kind)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(kind)
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return httpx.UnsupportedProtocol(kind)
    if reading:
        return httpx.ReadError(kind)
    return httpx.NetworkError(kind)


_FAILURES = (aiohttp.ClientError, OSError, TimeoutError)


_LINK_SEPARATOR = re.compile(r",\s*(?=<)")


def parse_links(values: list[str]) -> dict[str, dict[str, str]]:
    """RFC 8288 `Link` header values as {rel: {"url": ..., "rel": ..., other params}}.

    >>> parse_links(['<https://x/?page=2>; rel="next", <https://x/?page=9>; rel="last"'])[
    ...     "next"]["url"]
    'https://x/?page=2'
    """
    links: dict[str, dict[str, str]] = {}
    for value in values:
        for part in _LINK_SEPARATOR.split(value):
            url, _, params = part.strip().lstrip("<").partition(">")
            link = {"url": url}
            for param in params.split(";"):
                key, eq, raw = param.partition("=")
                if eq:
                    link[key.strip().lower()] = raw.strip().strip("\"'")
            links[link.get("rel") or url] = link
    return links


class HttpResponse:
    """A whole response: status, headers (case-insensitive, repeats kept) and body."""

    __slots__ = ("content", "headers", "reason", "status_code")

    def __init__(
        self, status_code: int, reason: str, headers: CIMultiDictProxy[str], content: bytes
    ) -> None:
        self.status_code = status_code
        self.reason = reason
        self.headers = headers
        self.content = content

    def json(self) -> Any:
        """The body as JSON (`ValueError` when it is not)."""
        return jsonlib.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    @property
    def links(self) -> dict[str, dict[str, str]]:
        return parse_links(self.headers.getall("link", []))


class HttpStream:
    """A response whose body is read as it arrives (`aiter_bytes`) or whole (`aread`)."""

    __slots__ = ("_response", "headers", "status_code")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code = response.status
        self.headers = response.headers

    async def aiter_bytes(self, chunk_bytes: int = _CHUNK_BYTES) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(chunk_bytes):
                yield chunk
        except _FAILURES as exc:
            raise _transport_error(exc, reading=True) from None

    async def aread(self) -> bytes:
        try:
            return await self._response.read()
        except _FAILURES as exc:
            raise _transport_error(exc, reading=True) from None


def _phase_s(timeout_s: float | None) -> float | None:
    """A bound for sending a request and reading its headers: connecting, waiting for a
    pooled connection, writing and reading, each `timeout_s` (httpx's four timeouts added
    up, as the client had them). aiohttp has no write timeout: without this bound, a
    server that stops reading a request body would hold the request, and its job, forever.
    """
    return None if timeout_s is None else 4 * timeout_s


class HttpWire:
    """HTTP/1.1 requests on one `aiohttp.ClientSession`, opened on first use.

    Sends exactly the headers given, plus `User-Agent`, `Accept-Encoding` and what HTTP
    needs (`Host`, `Content-Length`, `Content-Type` for JSON); follows no redirect; keeps
    no cookie. `max_connections` bounds the pool; idle connections are kept `keepalive_s`.
    """

    def __init__(
        self,
        *,
        user_agent: str,
        timeout_s: float | None,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 100,
        keepalive_s: float = 5.0,
    ) -> None:
        self._base_headers = {"User-Agent": user_agent, "Accept-Encoding": ACCEPT_ENCODING}
        self._ssl_context = ssl_context
        self._max_connections = max_connections
        self._keepalive_s = keepalive_s
        self._phase_s = _phase_s(timeout_s)
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout_s, sock_connect=timeout_s, sock_read=timeout_s
        )
        self._session: aiohttp.ClientSession | None = None

    def _open_session(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                keepalive_timeout=self._keepalive_s,
                ssl=self._ssl_context or httpx.create_ssl_context(),
            )
            session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                # The headers are ours (`_base_headers` and the caller's); aiohttp adds none.
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                timeout=self._timeout,
            )
            self._session = session
        return session

    async def _send(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        json: Any,
        headers: Mapping[str, str] | None,
    ) -> aiohttp.ClientResponse:
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
        merged = {**self._base_headers, **(headers or {})}
        body: bytes | None = None
        if json is not None:
            body = jsonlib.dumps(
                json, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode()
            merged["Content-Type"] = "application/json"
        try:
            async with asyncio.timeout(self._phase_s):
                return await self._open_session().request(
                    method,
                    # As given: our URLs are quoted already, and a signed blob URL must
                    # leave byte for byte.
                    URL(url, encoded=True),
                    headers=merged,
                    data=body,
                    allow_redirects=False,
                    compress=None,
                )
        except _FAILURES as exc:
            raise _transport_error(exc, reading=False) from None

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        """Send the request and read the whole response (`json`: a JSON body, compact)."""
        response = await self._send(method, url, params, json, headers)
        try:
            content = await response.read()
        except _FAILURES as exc:
            raise _transport_error(exc, reading=True) from None
        finally:
            response.release()
        return HttpResponse(response.status, response.reason or "", response.headers, content)

    @asynccontextmanager
    async def stream(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[HttpStream]:
        """The response with its body unread. Leaving releases the connection to the pool
        when the body was read to its end, and closes it otherwise."""
        response = await self._send(method, url, None, None, headers)
        try:
            yield HttpStream(response)
        finally:
            response.release()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
