"""The GitHub client's HTTP layer (`HttpWire`) against a raw loopback HTTP server.

The server is a plain asyncio socket server that records the bytes it receives and answers
what each test scripts, including the broken answers a network gives: refused connections,
silence, bodies cut short. What the tests pin down is what the client above relies on:
requests leave with exactly the headers given (and what HTTP needs) and a compact JSON
body, responses come back whole (status, repeated headers, links, streamed and decoded
bodies), connections are reused, and every failure is an `httpx.TransportError` that names
no URL.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest

from flakeguard.adapters.github.client import GitHubClient, GitHubConfig, RepoCoords
from flakeguard.adapters.github.throttle import backoff_s
from flakeguard.adapters.github.transport import HttpWire
from flakeguard.emulator.server import generated_private_key_pem
from flakeguard.errors import TransientJobError

Answer = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class RawServer:
    """Records each request's head and body; `answer` writes the response."""

    answer: Answer
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)
    connections: int = 0
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                self.requests.append((head, body))
                await self.answer(head, writer)
                if writer.is_closing():
                    return
                await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Answer], Awaitable[RawServer]]]:
    servers: list[asyncio.Server] = []

    async def start(answer: Answer) -> RawServer:
        raw = RawServer(answer)
        server = await asyncio.start_server(raw._serve, "127.0.0.1", 0)
        raw.port = server.sockets[0].getsockname()[1]
        servers.append(server)
        return raw

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def _response(status: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers)]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@asynccontextmanager
async def _client(timeout_s: float = 5.0) -> AsyncIterator[HttpWire]:
    wire = HttpWire(user_agent="flakeguard-worker", timeout_s=timeout_s)
    try:
        yield wire
    finally:
        await wire.aclose()


def _header_names(head: bytes) -> list[str]:
    return [line.split(b":")[0].decode().lower() for line in head.split(b"\r\n")[1:] if line]


async def test_request_leaves_with_the_given_headers_and_body_only(
    serve: Callable[[Answer], Awaitable[RawServer]],
) -> None:
    async def answer(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(_response("201 Created", [("Content-Type", "application/json")], b"{}"))

    server = await serve(answer)
    async with _client() as client:
        response = await client.request(
            "POST",
            f"{server.url}/repos/o/r/check-runs?x=1",
            params={"created": ">=2026-11-29T08:00:00Z", "per_page": 100},
            json={"name": "FlakeGuard", "title": "Flaky — 2"},
            headers={"Authorization": "token secret", "Accept": "application/vnd.github+json"},
        )
    assert response.status_code == 201
    assert response.reason == "Created"
    assert response.json() == {}
    head, body = server.requests[0]
    assert head.startswith(
        b"POST /repos/o/r/check-runs?x=1&created=%3E%3D2026-11-29T08%3A00%3A00Z&per_page=100"
        b" HTTP/1.1\r\n"
    )
    assert body == '{"name":"FlakeGuard","title":"Flaky — 2"}'.encode()
    # The headers given, the wire's two, what HTTP needs; nothing aiohttp adds by itself.
    assert sorted(_header_names(head)) == sorted(
        [
            "host",
            "accept",
            "accept-encoding",
            "user-agent",
            "authorization",
            "content-length",
            "content-type",
        ]
    )
    assert b"\r\nUser-Agent: flakeguard-worker\r\n" in head
    assert b"\r\nAccept-Encoding: gzip, deflate\r\n" in head
    assert b"\r\nContent-Type: application/json\r\n" in head


async def test_a_bare_request_carries_no_authorization(
    serve: Callable[[Answer], Awaitable[RawServer]],
) -> None:
    async def answer(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(_response("200 OK", [], b"blob"))

    server = await serve(answer)
    async with _client() as client, client.stream("GET", f"{server.url}/blob") as response:
        assert await response.aread() == b"blob"
    assert "authorization" not in _header_names(server.requests[0][0])
    assert "cookie" not in _header_names(server.requests[0][0])


async def test_repeated_headers_gzip_and_streamed_chunks_come_back_whole(
    serve: Callable[[Answer], Awaitable[RawServer]],
) -> None:
    payload = b"".join(b"%06d," % i for i in range(50_000))  # 350 kB, several chunks

    async def answer(head: bytes, writer: asyncio.StreamWriter) -> None:
        if head.startswith(b"GET /json"):
            writer.write(
                _response(
                    "200 OK",
                    [
                        ("Content-Type", "application/json"),
                        ("Content-Encoding", "gzip"),
                        ("Link", '<http://a/?page=2>; rel="next"'),
                        ("Link", '<http://a/?page=9>; rel="last"'),
                        ("Set-Cookie", "a=1"),
                    ],
                    gzip.compress(b'{"ok": true}'),
                )
            )
        else:
            writer.write(_response("200 OK", [], payload))

    server = await serve(answer)
    async with _client() as client:
        decoded = await client.request("GET", f"{server.url}/json")
        chunks: list[bytes] = []
        async with client.stream("GET", f"{server.url}/big") as response:
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
    assert decoded.json() == {"ok": True}
    assert decoded.headers.getall("link") == [
        '<http://a/?page=2>; rel="next"',
        '<http://a/?page=9>; rel="last"',
    ]
    assert decoded.links["next"]["url"] == "http://a/?page=2"
    assert decoded.links["last"] == {"url": "http://a/?page=9", "rel": "last"}
    assert b"".join(chunks) == payload
    assert len(chunks) > 1
    # Both requests went over one kept-alive connection.
    assert server.connections == 1


async def test_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on `port` now.
    async with _client() as client:
        with pytest.raises(httpx.ConnectError) as raised:
            await client.request("GET", f"http://127.0.0.1:{port}/secret-path?sig=abc")
    assert "secret-path" not in str(raised.value)
    assert "sig=abc" not in str(raised.value)


async def test_silence_is_a_read_timeout(serve: Callable[[Answer], Awaitable[RawServer]]) -> None:
    async def answer(head: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    server = await serve(answer)
    async with _client(timeout_s=0.2) as client:
        with pytest.raises(httpx.TimeoutException):
            await client.request("GET", f"{server.url}/slow")


async def test_a_server_that_stops_reading_the_body_times_out() -> None:
    """aiohttp has no write timeout; the wire bounds the request phase itself."""
    held: list[asyncio.StreamWriter] = []

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accepts the connection, reads nothing

    server = await asyncio.start_server(never_read, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with _client(timeout_s=0.2) as client:
            started = time.monotonic()
            with pytest.raises(httpx.TimeoutException):
                # 50 MB: far more than the socket buffers take without a reader.
                await client.request("POST", f"http://127.0.0.1:{port}/up", json="x" * 50_000_000)
            assert time.monotonic() - started < 5
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_body_cut_short_is_a_transport_error_without_the_url(
    serve: Callable[[Answer], Awaitable[RawServer]],
) -> None:
    async def answer(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
        await writer.drain()
        writer.transport.abort()

    server = await serve(answer)

    async def read_all(client: HttpWire) -> None:
        async with client.stream("GET", f"{server.url}/blob?sig=secret") as response:
            async for _ in response.aiter_bytes():
                pass

    async with _client() as client:
        with pytest.raises(httpx.TransportError) as raised:
            await read_all(client)
    assert "sig=secret" not in str(raised.value)
    assert "blob" not in str(raised.value)


async def test_the_client_retries_a_dropped_connection_then_gives_up_transiently(
    serve: Callable[[Answer], Awaitable[RawServer]],
) -> None:
    async def answer(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.transport.abort()  # every request: the connection drops before any answer

    server = await serve(answer)
    waits: list[float] = []

    async def no_sleep(seconds: float) -> None:
        waits.append(seconds)

    config = GitHubConfig(
        app_id="1",
        private_key_pem=generated_private_key_pem(),
        api_url=server.url,
        retry_base_s=0.5,
        max_retries=2,
    )
    async with GitHubClient(config, sleep=no_sleep) as gh:
        with pytest.raises(TransientJobError, match="network error"):
            await gh.list_installations()  # a read with the app's JWT
        reads = len(server.requests)
        with pytest.raises(TransientJobError, match="network error"):
            await gh.list_run_artifacts(RepoCoords("o", "r", 7), 1)  # a token POST first
    # The client's three tries (one retry after each of two waits). aiohttp resends an
    # idempotent request once, at once, when its connection drops: the stale keep-alive
    # race, which httpcore avoided by polling each idle connection before reuse.
    assert reads == 3 * 2
    assert waits == [backoff_s(0, 0.5), backoff_s(1, 0.5)]
    # A write is never resent, by either layer: it may have been applied.
    assert len(server.requests) == reads + 1
    assert server.requests[-1][0].startswith(b"POST /app/installations/7/access_tokens ")


async def test_a_body_left_unread_closes_its_connection(
    serve: Callable[[Answer], Awaitable[RawServer]],
) -> None:
    """The client stops reading a blob over its byte budget: that connection still holds
    the rest of the body, so it must not serve the next request."""
    payload = b"x" * 1_000_000

    async def answer(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(_response("200 OK", [], payload if b"/big" in head else b"small"))

    server = await serve(answer)
    async with _client() as client:
        async with client.stream("GET", f"{server.url}/big") as response:
            async for _ in response.aiter_bytes():
                break  # over budget: stop after the first chunk
        follow_up = await client.request("GET", f"{server.url}/small")
    assert follow_up.content == b"small"
    assert server.connections == 2
