"""An `httpx` transport on aiohttp's connection pool: the GitHub client's wire layer.

The client keeps `httpx.AsyncClient`'s API (requests, responses, streaming, headers,
decoding); only the layer that writes requests and reads responses changes. httpx's own
layer (httpcore + h11) cost ~0.85 ms of CPU per request on this project's machines, and
checks every pooled connection with a `select` before reusing it; aiohttp's C HTTP parser
does the same request in ~0.26 ms (README, "Decisions"). With four requests per
run, that was a third of the worker's CPU in `bench/github_ingest.py`.

What the transport does not do, httpx still does above it: redirects (the client follows
none), cookies, content decoding (aiohttp's is off), and proxies from the environment
(httpx routes those URLs to its own proxy transports).

Errors: every aiohttp or socket failure leaves as an `httpx.TransportError` subclass, the
one family the client retries on, with the failure's class name and no URL (a signed blob
URL is a credential). Timeouts: aiohttp's per-read and connect timeouts take httpx's
values; aiohttp has none for writing, so sending a request and reading its headers is
bounded by httpx's four timeouts added up (`_request_phase_s`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx

_CHUNK_BYTES = 64 * 1024


def _transport_error(exc: BaseException, *, reading: bool) -> httpx.TransportError:
    """The httpx error for an aiohttp/socket failure (message: the failure's kind only)."""
    kind = type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(kind)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(kind)
    if isinstance(exc, TimeoutError):
        # The request phase's own bound (`_request_phase_s`), or a read past it.
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


def _request_phase_s(timeouts: dict[str, float | None]) -> float | None:
    """A bound for sending a request and reading its headers: httpx's pool, connect, write
    and read timeouts added up (None if any is None).

    aiohttp has no write timeout: without this, a server that stops reading a request body
    would hold the request, and its job, forever.
    """
    total = 0.0
    for name in ("pool", "connect", "write", "read"):
        value = timeouts.get(name)
        if value is None:
            return None
        total += value
    return total


class _ResponseStream(httpx.AsyncByteStream):
    """An aiohttp response body as httpx's stream; closing it releases the connection."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(_CHUNK_BYTES):
                yield chunk
        except _FAILURES as exc:
            raise _transport_error(exc, reading=True) from None

    async def aclose(self) -> None:
        # Back to the pool when the body was read to its end, closed otherwise.
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx requests sent through one `aiohttp.ClientSession`, opened on first use.

    `max_connections` bounds the pool (httpx's default: 100); idle connections are kept
    `keepalive_s` (httpx's default: 5 s).
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 100,
        keepalive_s: float = 5.0,
    ) -> None:
        self._ssl_context = ssl_context
        self._max_connections = max_connections
        self._keepalive_s = keepalive_s
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
                cookie_jar=aiohttp.DummyCookieJar(),  # httpx keeps the cookies, if any
                auto_decompress=False,  # httpx decodes
                # httpx sets the headers; aiohttp adds none of its own.
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                timeout=aiohttp.ClientTimeout(total=None),
            )
            self._session = session
        return session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._open_session()
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        body = await request.aread()
        try:
            async with asyncio.timeout(_request_phase_s(timeouts)):
                response = await session.request(
                    request.method,
                    str(request.url),
                    # As httpx wrote them, names in their original case.
                    headers=[
                        (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw
                    ],
                    data=body or None,
                    allow_redirects=False,
                    compress=None,
                    timeout=aiohttp.ClientTimeout(
                        total=None,
                        connect=timeouts.get("pool"),
                        sock_connect=timeouts.get("connect"),
                        sock_read=timeouts.get("read"),
                    ),
                )
        except _FAILURES as exc:
            raise _transport_error(exc, reading=False) from None
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("ascii", "replace")
        return httpx.Response(
            status_code=response.status,
            headers=list(response.raw_headers),
            stream=_ResponseStream(response),
            extensions=extensions,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
