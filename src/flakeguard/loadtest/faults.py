"""The `--faults` spec of `flakeguard load-test`.

`github_5xx=0.05,github_429=0.01,github_slow=0.02,redis_restart=30s,pg_restart=60s:20s,kill9=2`

- `github_5xx`, `github_429`, `github_slow`: the share of jobs (0..1, drawn from the seed)
  whose run gets one such answer from the emulator (on its artifact listing or download):
  a 502, a 429 with `retry-after: 1`, or a 1.5 s delay.
- `redis_restart=AT[:DOWN]`, `pg_restart=AT[:DOWN]`: restart the server AT seconds after the
  load starts, keeping it down DOWN seconds (default 2). Several: `30s+90s:5s`. Refused
  unless the load test started the server itself (`--own-services`).
- `kill9=N` (N kills spread evenly over the load) or `kill9=10s+40s`: SIGKILL a worker
  process at those times; a replacement starts at once, as an orchestrator would.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_DOWN_S = 2.0


class FaultSpecError(ValueError):
    """The `--faults` spec is invalid; the message names the part."""


@dataclass(frozen=True, slots=True)
class Outage:
    at_s: float
    down_s: float = DEFAULT_DOWN_S


@dataclass(frozen=True, slots=True)
class FaultPlan:
    github_5xx: float = 0.0
    github_429: float = 0.0
    github_slow: float = 0.0
    redis_restarts: tuple[Outage, ...] = ()
    pg_restarts: tuple[Outage, ...] = ()
    kill9_at_s: tuple[float, ...] = ()
    kill9_count: int = 0
    """Kills spread evenly over the load (used when `kill9_at_s` is empty)."""

    @property
    def restarts_services(self) -> bool:
        return bool(self.redis_restarts or self.pg_restarts)

    def kill_times(self, load_duration_s: float) -> tuple[float, ...]:
        """`kill9_at_s`, or `kill9_count` instants at (k / (count + 1)) of the load."""
        if self.kill9_at_s:
            return self.kill9_at_s
        n = self.kill9_count
        return tuple(load_duration_s * (k + 1) / (n + 1) for k in range(n))


def _seconds(raw: str, where: str) -> float:
    text = raw.strip().lower()
    scale = 1.0
    if text.endswith("ms"):
        text, scale = text[:-2], 0.001
    elif text.endswith("s"):
        text = text[:-1]
    elif text.endswith("m"):
        text, scale = text[:-1], 60.0
    try:
        value = float(text) * scale
    except ValueError:
        raise FaultSpecError(f"{where}: {raw!r} is not a duration (e.g. 30s, 1m)") from None
    if value < 0:
        raise FaultSpecError(f"{where}: {raw!r} is negative")
    return value


def _share(raw: str, where: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise FaultSpecError(f"{where}: {raw!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise FaultSpecError(f"{where}: {raw!r} is not a share between 0 and 1")
    return value


def _outages(raw: str, where: str) -> tuple[Outage, ...]:
    outages = []
    for part in raw.split("+"):
        at, _, down = part.partition(":")
        outages.append(
            Outage(_seconds(at, where), _seconds(down, where) if down else DEFAULT_DOWN_S)
        )
    return tuple(outages)


def parse_faults(spec: str | None) -> FaultPlan:
    """Parse the spec; an empty or missing spec is no faults.

    >>> parse_faults("github_5xx=0.05,pg_restart=60s:20s,kill9=2").pg_restarts
    (Outage(at_s=60.0, down_s=20.0),)
    """
    values: dict[str, object] = {}
    for item in (spec or "").split(","):
        if not item.strip():
            continue
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            raise FaultSpecError(f"{item!r}: expected KEY=VALUE")
        if key in ("github_5xx", "github_429", "github_slow"):
            values[key] = _share(raw, key)
        elif key == "redis_restart":
            values["redis_restarts"] = _outages(raw, key)
        elif key == "pg_restart":
            values["pg_restarts"] = _outages(raw, key)
        elif key == "kill9":
            if raw.strip().isdigit():
                values["kill9_count"] = int(raw)
            else:
                values["kill9_at_s"] = tuple(_seconds(t, key) for t in raw.split("+"))
        else:
            raise FaultSpecError(
                f"unknown fault {key!r} (github_5xx, github_429, github_slow, redis_restart, "
                "pg_restart, kill9)"
            )
    return FaultPlan(**values)  # type: ignore[arg-type]
