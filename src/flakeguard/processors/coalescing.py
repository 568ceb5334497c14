"""Group commit for scoring passes: jobs that want the same kind of pass share one.

When CI finishes many runs of one repository at once (a matrix, a merge train, a backlog
after an outage), each `runs-analyze` job would re-read and re-score mostly the same tests.
Here a job adds the tests it wants to the repository's open batch and waits; the first job
of a batch leads: it waits until the repository's previous pass (if any) has finished, closes
the batch and runs one pass over the union. Every job of the batch gets that pass's result.

Correctness: a job joins before its batch's pass starts, and its run was stored before the
job was enqueued, so the pass reads the job's executions. Passes of one repository run one
at a time (in this process); other processes coalesce on their own, which is only less
sharing, never a wrong result.

If the leader is cancelled (worker shutdown) before its pass finishes, the batch is
abandoned and its other jobs start over, one of them leading; an error of the pass itself
is every member's error (each job then retries on its own).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
R = TypeVar("R")
IK = TypeVar("IK", bound=Hashable)


class _AbandonedError(Exception):
    """The batch's leader was cancelled before its pass finished."""


@dataclass(eq=False)
class _Batch(Generic[V, R]):
    future: asyncio.Future[R]
    items: dict[Hashable, V] = field(default_factory=dict)


class PassCoalescer(Generic[K, V, R]):
    """Runs `run_pass(items)` once for all callers that joined the same batch of `key`.

    Below, "a" finds no pass running and runs alone; "b" and "c" arrive during it and share
    the second pass:

    >>> async def demo() -> list[int]:
    ...     passes: list[list[str]] = []
    ...     async def run_pass(items: list[str]) -> int:
    ...         passes.append(sorted(items))
    ...         await asyncio.sleep(0)
    ...         return len(passes)
    ...     groups: PassCoalescer[str, str, int] = PassCoalescer()
    ...     calls = [groups.run("repo", {n: n}, run_pass) for n in "abc"]
    ...     return await asyncio.gather(*calls)
    >>> asyncio.run(demo())
    [1, 2, 2]
    """

    def __init__(self) -> None:
        self._open: dict[K, _Batch[V, R]] = {}
        self._locks: dict[K, asyncio.Lock] = {}
        self.passes = 0
        """Passes run so far (for tests and metrics)."""
        self.joined = 0
        """Callers served so far."""

    async def run(
        self,
        key: K,
        items: Mapping[IK, V],
        run_pass: Callable[[list[V]], Awaitable[R]],
    ) -> R:
        """Join the open batch of `key` with `items` (deduplicated by their keys)."""
        while True:
            batch = self._open.get(key)
            if batch is not None:
                for item_key, item in items.items():
                    batch.items[item_key] = item
                try:
                    result = await asyncio.shield(batch.future)
                except _AbandonedError:
                    continue  # the leader went away: join or lead the next batch
                self.joined += 1
                return result
            return await self._lead(key, items, run_pass)

    async def _lead(
        self,
        key: K,
        items: Mapping[IK, V],
        run_pass: Callable[[list[V]], Awaitable[R]],
    ) -> R:
        batch: _Batch[V, R] = _Batch(asyncio.get_running_loop().create_future())
        # Mark a failure as retrieved even when no other member awaits it.
        batch.future.add_done_callback(lambda f: f.cancelled() or f.exception())
        for item_key, item in items.items():
            batch.items[item_key] = item
        self._open[key] = batch
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                if self._open.get(key) is batch:
                    del self._open[key]  # later callers form the next batch
                self.passes += 1
                result = await run_pass(list(batch.items.values()))
        except asyncio.CancelledError:
            self._close(key, batch, _AbandonedError())
            raise
        except BaseException as exc:
            self._close(key, batch, exc)
            raise
        batch.future.set_result(result)
        self.joined += 1
        return result

    def _close(self, key: K, batch: _Batch[V, R], exc: BaseException) -> None:
        if self._open.get(key) is batch:
            del self._open[key]
        if not batch.future.done():
            batch.future.set_exception(exc)
