"""Repositories and their polling cursors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from flakeguard.adapters.db.engine import aware, reading
from flakeguard.adapters.db.tables import RepositoryRow, table_of


@dataclass(frozen=True, slots=True)
class PollState:
    repository_id: int
    owner: str
    name: str
    installation_id: int | None
    cursor: datetime | None
    seen: tuple[tuple[int, int, float], ...]
    """(run id, attempt, created epoch) already enqueued inside the overlap window."""
    etag: str | None


async def enabled_repositories(engine: AsyncEngine) -> list[PollState]:
    t = table_of(RepositoryRow)
    async with reading(engine) as conn:
        rows = (await conn.execute(select(t).where(t.c.enabled.is_(True)).order_by(t.c.id))).all()
    return [
        PollState(
            repository_id=int(r.id),
            owner=r.owner,
            name=r.name,
            installation_id=r.installation_id,
            cursor=aware(r.poll_cursor) if r.poll_cursor else None,
            seen=tuple((int(a), int(b), float(c)) for a, b, c in (r.poll_seen_run_ids or [])),
            etag=r.poll_etag,
        )
        for r in rows
    ]


async def save_poll_state(
    engine: AsyncEngine,
    repository_id: int,
    *,
    cursor: datetime | None,
    seen: tuple[tuple[int, int, float], ...],
    etag: str | None,
    now: datetime,
) -> None:
    t = table_of(RepositoryRow)
    async with engine.begin() as conn:
        await conn.execute(
            update(t)
            .where(t.c.id == repository_id)
            .values(
                poll_cursor=cursor,
                poll_seen_run_ids=[list(s) for s in seen],
                poll_etag=etag,
                updated_at=now,
            )
        )


async def set_enabled(
    engine: AsyncEngine, owner: str, name: str, enabled: bool, now: datetime
) -> None:
    t = table_of(RepositoryRow)
    async with engine.begin() as conn:
        await conn.execute(
            update(t)
            .where(t.c.owner == owner, t.c.name == name)
            .values(enabled=enabled, updated_at=now)
        )
