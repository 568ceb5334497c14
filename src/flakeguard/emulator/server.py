"""Running the emulator: in a background thread (tests, load tests) or in the foreground (CLI).

- `async with run_emulator(scenario_or_dir) as emu:` → an `Emulator` with `api_url`, `blob_url`,
  `app_id`, `private_key_pem`, `faults`, `requests`, `check_runs`, `add_repo`/`add_run`, webhook
  payload builders and `deliver_webhook`.
- `with start_emulator(...) as emu:` is the same for synchronous code.
- `main(port, scenario_dir, host)` serves until SIGINT/SIGTERM (`flakeguard emulator`).
The API listens on `host:port`; the blob host on another origin (127.0.0.2 when the API is on
127.0.0.1, else the same host on another port), as GitHub's artifact storage is.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import json
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from flakeguard.emulator import payloads
from flakeguard.emulator.app import ApiApp, BlobApp
from flakeguard.emulator.faults import FaultBook, FaultTarget
from flakeguard.emulator.scenario import (
    ArtifactSpec,
    InstallationSpec,
    RepoSpec,
    RunSpec,
    Scenario,
    load_scenario,
)
from flakeguard.emulator.state import CheckRunRecord, Clock, EmulatorState, RequestRecord
from flakeguard.event_loop import new_event_loop

_STARTUP_TIMEOUT_S = 15.0
_WEBHOOK_TIMEOUT_S = 10.0
"""GitHub gives a webhook receiver 10 s to answer."""


@functools.cache
def generated_private_key_pem() -> str:
    """One RSA-2048 key per process (key generation takes ~0.1-1 s): the emulated app's key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def _private_key_for(scenario: Scenario) -> str:
    path = scenario.private_key_file
    if path is None:
        return generated_private_key_pem()
    if path.is_file():
        return path.read_text(encoding="ascii")
    pem = generated_private_key_pem()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(pem, encoding="ascii")
    path.chmod(0o600)
    return pem


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    delivery_id: str
    status_code: int
    body: bytes


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only when the proto
    # says TCP; without it Nagle + delayed ACK add ~40 ms to every keep-alive response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _blob_socket(api_host: str, blob_host: str | None, blob_port: int) -> tuple[socket.socket, str]:
    """Bind the blob host on another origin; returns the socket and the host name for its URLs."""
    if blob_host is not None:
        return _bind(blob_host, blob_port), blob_host
    if api_host == "127.0.0.1":
        try:
            return _bind("127.0.0.2", blob_port), "127.0.0.2"
        except OSError:
            # No 127.0.0.2 (e.g. macOS): "localhost" on its own port is another origin too.
            return _bind("127.0.0.1", blob_port), "localhost"
    return _bind(api_host, blob_port), api_host


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):  # noqa: S104 - a URL needs a concrete address
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


class Emulator:
    """A running emulated GitHub. Thread-safe to drive from tests while it serves."""

    def __init__(
        self, state: EmulatorState, *, api_url: str, blob_url: str, private_key_pem: str
    ) -> None:
        self.state = state
        self.api_url = api_url
        self.blob_url = blob_url
        self.private_key_pem = private_key_pem
        self._next_artifact_id = 700_000_000
        self._next_run_number = 1000

    def __repr__(self) -> str:
        return f"Emulator(api_url={self.api_url!r}, blob_url={self.blob_url!r})"

    # ---- what tests read ---------------------------------------------------------------------

    @property
    def app_id(self) -> str:
        return str(self.state.app.id)

    @property
    def faults(self) -> FaultBook:
        return self.state.faults

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request so far (API and blob), oldest first. A copy."""
        return list(self.state.requests)

    def api_requests(self) -> list[RequestRecord]:
        return [r for r in self.state.requests if r.target is FaultTarget.API]

    def blob_requests(self) -> list[RequestRecord]:
        return [r for r in self.state.requests if r.target is FaultTarget.BLOB]

    def clear_requests(self) -> None:
        self.state.requests.clear()

    @property
    def check_runs(self) -> list[CheckRunRecord]:
        """Stored check runs (immutable snapshots), oldest first."""
        with self.state.lock:
            return sorted(self.state.check_runs.values(), key=lambda r: r.id)

    # ---- growing the world -------------------------------------------------------------------

    def add_installation(
        self, installation_id: int, account: str, *, account_type: str = "Organization"
    ) -> InstallationSpec:
        return self.state.add_installation(InstallationSpec(installation_id, account, account_type))

    def add_repo(
        self,
        full_name: str,
        installation_id: int,
        *,
        repo_id: int | None = None,
        default_branch: str = "main",
        private: bool = False,
    ) -> RepoSpec:
        owner, _, name = full_name.partition("/")
        if installation_id not in self.state.installations:
            self.add_installation(installation_id, owner)
        ident = repo_id if repo_id is not None else 20_000 + len(self.state.repos)
        return self.state.add_repo(
            RepoSpec(ident, owner, name, installation_id, default_branch, private)
        )

    def add_artifact_template(self, template: str, zip_bytes: bytes) -> None:
        """Register ZIP bytes once; any number of artifacts can then name `template`."""
        with self.state.lock:
            self.state.artifacts_store.put(template, zip_bytes)

    def add_run(
        self,
        repo: str | RepoSpec,
        run_id: int,
        *,
        head_sha: str | None = None,
        attempt: int = 1,
        head_branch: str | None = "main",
        event: str = "push",
        status: str = "completed",
        conclusion: str | None = "success",
        created_at: datetime | None = None,
        pr_number: int | None = None,
        workflow_name: str = "CI",
        artifacts: Sequence[tuple[str, str]] = (),
        expired: bool = False,
    ) -> RunSpec:
        """Add one attempt of a run; `artifacts` are (artifact name, template) pairs."""
        spec = repo if isinstance(repo, RepoSpec) else self.state.repos_by_name[repo.lower()]
        with self.state.lock:
            artifact_specs = []
            for name, template in artifacts:
                self._next_artifact_id += 1
                artifact_specs.append(
                    ArtifactSpec(self._next_artifact_id, name, template, expired=expired)
                )
            self._next_run_number += 1
            run_number = self._next_run_number
        moment = created_at or datetime.fromtimestamp(self.state.clock(), tz=UTC)
        run = RunSpec(
            id=run_id,
            repo_id=spec.id,
            head_sha=head_sha
            or hashlib.sha1(str(run_id).encode(), usedforsecurity=False).hexdigest(),
            attempt=attempt,
            head_branch=head_branch,
            event=event,
            status=status,
            conclusion=conclusion,
            created_at=moment,
            pr_numbers=(pr_number,) if pr_number is not None else (),
            workflow_name=workflow_name,
            run_number=run_number,
            artifacts=tuple(artifact_specs),
        )
        return self.state.add_run(run)

    def artifact_ids(self, repo: str, run_id: int) -> list[int]:
        spec = self.state.repos_by_name[repo.lower()]
        with self.state.lock:
            attempts = self.state.runs.get((spec.id, run_id), {})
            return [a.id for n in sorted(attempts) for a in attempts[n].artifacts]

    def expire_artifact(self, artifact_id: int) -> None:
        self.state.expire_artifact(artifact_id)

    def expire_tokens(self, installation_id: int | None = None) -> int:
        return self.state.expire_tokens(installation_id)

    def set_rate_limit(
        self, installation_id: int | None, *, limit: int, remaining: int, reset_in_s: float
    ) -> None:
        self.state.set_rate_limit(
            installation_id, limit=limit, remaining=remaining, reset_in_s=reset_in_s
        )

    @property
    def token_replication_delay_s(self) -> float:
        return self.state.token_replication_delay_s

    @token_replication_delay_s.setter
    def token_replication_delay_s(self, value: float) -> None:
        self.state.token_replication_delay_s = value

    # ---- webhook payloads --------------------------------------------------------------------

    def _owner_json(self, repo: RepoSpec) -> dict[str, Any]:
        installation = self.state.owner_of(repo)
        account_id = installation.account_id or 1_000_000 + installation.id
        return payloads.user(
            installation.account_login, account_id, self.api_url, kind=installation.account_type
        )

    def workflow_run_event(
        self, repo: str, run_id: int, *, attempt: int | None = None, action: str = "completed"
    ) -> dict[str, Any]:
        spec = self.state.repos_by_name[repo.lower()]
        run = (
            self.state.latest_attempt(spec.id, run_id)
            if attempt is None
            else self.state.run_attempt(spec.id, run_id, attempt)
        )
        if run is None:
            raise KeyError(f"no run {run_id} (attempt {attempt}) in {repo}")
        return payloads.workflow_run_event(
            run, spec, self._owner_json(spec), self.api_url, action=action
        )

    def check_run_requested_action_event(
        self, check_run_id: int, identifier: str
    ) -> dict[str, Any]:
        record = self.state.check_runs[check_run_id]
        repo = self.state.repos[record.repo_id]
        app_json = payloads.integration(self.state.app, self.api_url)
        check_run = payloads.check_run(record, repo, app_json, self.api_url)
        return payloads.check_run_requested_action_event(
            check_run,
            repo,
            self._owner_json(repo),
            self.api_url,
            identifier=identifier,
            head_branch=repo.default_branch,
        )

    def installation_event(
        self, installation_id: int, *, action: str = "created"
    ) -> dict[str, Any]:
        spec = self.state.installations[installation_id]
        with self.state.lock:
            repos = [r for r in self.state.repos.values() if r.installation_id == installation_id]
        return payloads.installation_event(self.state.app, spec, repos, self.api_url, action=action)

    def installation_repositories_event(
        self,
        installation_id: int,
        *,
        added: Sequence[str] = (),
        removed: Sequence[str] = (),
    ) -> dict[str, Any]:
        spec = self.state.installations[installation_id]
        return payloads.installation_repositories_event(
            self.state.app,
            spec,
            self.api_url,
            added=[self.state.repos_by_name[n.lower()] for n in added],
            removed=[self.state.repos_by_name[n.lower()] for n in removed],
        )

    def ping_event(self, url: str, *, hook_id: int = 1) -> dict[str, Any]:
        return payloads.ping_event(self.state.app, hook_id, url)

    async def deliver_webhook(
        self,
        url: str,
        event: str,
        payload: dict[str, Any] | bytes,
        secret: str,
        delivery_id: str | None = None,
        *,
        client: httpx.AsyncClient | None = None,
    ) -> WebhookDelivery:
        """POST a delivery as GitHub does: `X-Hub-Signature-256` over the exact bytes sent.

        Re-delivering reuses the same `delivery_id` (pass it again).
        """
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
        delivery = delivery_id or str(uuid.uuid4())
        key = secret.encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/emulator",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery,
            "X-GitHub-Hook-ID": "1",
            "X-GitHub-Hook-Installation-Target-Type": "integration",
            "X-GitHub-Hook-Installation-Target-ID": self.app_id,
            "X-Hub-Signature-256": "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest(),
            "X-Hub-Signature": "sha1=" + hmac.new(key, body, hashlib.sha1).hexdigest(),
        }
        if client is not None:
            response = await client.post(url, content=body, headers=headers)
        else:
            async with httpx.AsyncClient(timeout=_WEBHOOK_TIMEOUT_S) as own:
                response = await own.post(url, content=body, headers=headers)
        return WebhookDelivery(delivery, response.status_code, response.content)


class _ServerThread:
    """Both uvicorn servers on one event loop in a daemon thread."""

    def __init__(
        self, api: ApiApp, blob: BlobApp, api_sock: socket.socket, blob_sock: socket.socket
    ) -> None:
        self._servers = [
            uvicorn.Server(self._config(api)),
            uvicorn.Server(self._config(blob)),
        ]
        self._sockets = [api_sock, blob_sock]
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="github-emulator", daemon=True)

    @staticmethod
    def _config(app: Any) -> uvicorn.Config:
        return uvicorn.Config(
            app,
            lifespan="off",
            access_log=False,
            log_level="warning",
            http="httptools",
            timeout_graceful_shutdown=2,
            timeout_keep_alive=30,
        )

    def start(self) -> None:
        self._thread.start()
        if not self._started.wait(_STARTUP_TIMEOUT_S) or self._error is not None:
            self.stop()
            raise RuntimeError("GitHub emulator failed to start") from self._error

    def stop(self) -> None:
        for server in self._servers:
            server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        for sock in self._sockets:
            sock.close()

    def _run(self) -> None:
        try:
            with asyncio.Runner(loop_factory=new_event_loop) as runner:
                runner.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            self._error = exc
            self._started.set()

    async def _serve(self) -> None:
        tasks = [
            asyncio.create_task(server.serve(sockets=[sock]))
            for server, sock in zip(self._servers, self._sockets, strict=True)
        ]
        while not all(server.started for server in self._servers):
            if any(task.done() for task in tasks):
                break
            await asyncio.sleep(0.005)
        self._started.set()
        await asyncio.gather(*tasks)


class RunningEmulator:
    """A started emulator (`emulator`) and its server thread; `close()` stops it."""

    def __init__(self, emulator: Emulator, thread: _ServerThread) -> None:
        self.emulator = emulator
        self._thread = thread

    def close(self) -> None:
        self._thread.stop()

    def __enter__(self) -> Emulator:
        return self.emulator

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def start_emulator(
    scenario: Scenario | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    blob_host: str | None = None,
    blob_port: int = 0,
    clock: Clock = time.time,
) -> RunningEmulator:
    """Start the emulator in a background thread (use as a context manager, or `close()`)."""
    loaded = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    private_key_pem = _private_key_for(loaded)
    public_key = serialization.load_pem_private_key(
        private_key_pem.encode("ascii"), password=None
    ).public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ValueError("the emulated app's key must be an RSA key")
    state = EmulatorState(loaded, clock=clock)
    api_sock = _bind(host, port)
    try:
        blob_sock, blob_url_host = _blob_socket(host, blob_host, blob_port)
    except OSError:
        api_sock.close()
        raise
    api_url = f"http://{_url_host(host)}:{api_sock.getsockname()[1]}"
    blob_url = f"http://{_url_host(blob_url_host)}:{blob_sock.getsockname()[1]}"
    api_app = ApiApp(state, api_url=api_url, blob_url=blob_url, public_key=public_key)
    blob_app = BlobApp(state, api_app)
    thread = _ServerThread(api_app, blob_app, api_sock, blob_sock)
    thread.start()
    emulator = Emulator(state, api_url=api_url, blob_url=blob_url, private_key_pem=private_key_pem)
    return RunningEmulator(emulator, thread)


@contextlib.asynccontextmanager
async def run_emulator(
    scenario: Scenario | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    blob_host: str | None = None,
    blob_port: int = 0,
    clock: Clock = time.time,
) -> AsyncIterator[Emulator]:
    """`async with run_emulator(scenario) as emu:` — serves in a background thread meanwhile."""
    running = await asyncio.to_thread(
        start_emulator,
        scenario,
        host=host,
        port=port,
        blob_host=blob_host,
        blob_port=blob_port,
        clock=clock,
    )
    try:
        yield running.emulator
    finally:
        await asyncio.to_thread(running.close)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def main(
    port: int,
    scenario_dir: Path,
    host: str = "127.0.0.1",
    *,
    blob_port: int | None = None,
    blob_host: str | None = None,
) -> None:
    """Serve the scenario in `scenario_dir` on `host:port` until SIGINT/SIGTERM.

    Prints the API and blob URLs, the app id and where the app's private key is; the blob host
    listens on `blob_port` (default `port + 1`, or any free port when `port` is 0).
    """
    scenario = load_scenario(scenario_dir)
    if scenario.private_key_file is None:
        scenario = Scenario(
            app=scenario.app,
            installations=scenario.installations,
            repos=scenario.repos,
            runs=scenario.runs,
            artifact_templates=scenario.artifact_templates,
            private_key_file=Path(scenario_dir) / ".emulator" / "app-private-key.pem",
        )
    stop = threading.Event()
    with _stop_on_signals(stop):
        running = start_emulator(
            scenario,
            host=host,
            port=port,
            blob_host=blob_host,
            blob_port=blob_port if blob_port is not None else (port + 1 if port else 0),
        )
        with running as emulator:
            banner = {
                "api_url": emulator.api_url,
                "blob_url": emulator.blob_url,
                "app_id": emulator.app_id,
                "private_key_file": str(scenario.private_key_file),
                "repos": len(emulator.state.repos),
                "runs": len(emulator.state.runs),
            }
            sys.stdout.write(json.dumps({"event": "emulator.started", **banner}) + "\n")
            sys.stdout.flush()
            while not stop.wait(0.5):
                pass
