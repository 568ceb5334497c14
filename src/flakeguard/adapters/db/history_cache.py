"""Test histories kept between the scoring passes of `runs-analyze` (one cache per process).

A pass re-scores the tests its runs can change, from each test's whole history in the
lookback window. Read from the database every time, a test with evidence that runs in every
run was read again at every pass: with ~180 such tests per repository, reading histories
was ~11 % of the worker's CPU in the GitHub bench, and grew with the window. Here a test's
history is kept with the runs it covers, and a pass reads only what changed since:

- the runs that entered the window (stored since, or an older window widened);
- the runs whose `executions` count changed (another job's report was added to the run,
  in the transaction that raised the count);
- and it drops the runs that left the window (or were deleted with their executions).

Why the result equals a fresh read (`read_histories`): a history covers exactly the runs of
the index it was last brought up to date against (`_History.covered`, that index's
`executions` counts), and every record of a covered run was read after the count was.
Executions are only ever added with a count change and deleted with their run, so a covered
run whose count is unchanged holds the same executions; the rest is read again. Records
keep their run's fields from the index that read them; those never change, except
`is_default_branch`, so a history read against another default branch is read again.
The records come in another order (kept runs first, new ones after): a fresh read has no
set order within a test either, and the scorer does not depend on it.

Bounded: at most `max_records` records (least recently used tests leave first). Passes of
one repository run one at a time per process (`coalescing`), but a button's pass may run
beside one: a history is replaced whole, never updated in place, so each stays consistent.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from sqlalchemy.ext.asyncio import AsyncEngine

from flakeguard.adapters.db.history import CaseInfo, RunIndex, read_histories
from flakeguard.core.models import ExecutionRecord

DEFAULT_MAX_RECORDS: Final = 300_000
"""~60 MB at most: ~200 bytes a record, its strings and times shared with the run index
(the GitHub bench with 20 failure patterns, 1,000 runs: peak RSS +58 MB, cache full)."""


@dataclass(frozen=True, slots=True)
class _History:
    covered: dict[int, int]
    """The runs read (workflow_runs.id -> `executions` count then): an index's own dict,
    shared by every history brought up to date against that index."""
    default_branch: str
    records: list[ExecutionRecord]
    rows: list[int]
    """`records[i]`'s workflow_runs.id."""


class HistoryCache:
    """Histories by test-case id, brought up to date against each pass's run index."""

    def __init__(self, max_records: int = DEFAULT_MAX_RECORDS) -> None:
        self.max_records = max_records
        self._entries: OrderedDict[int, _History] = OrderedDict()
        self._size = 0
        self.read_records = 0
        """Records read from the database so far (for tests and benchmarks)."""

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def records(self) -> int:
        return self._size

    async def histories(
        self, engine: AsyncEngine, cases: Sequence[CaseInfo], index: RunIndex
    ) -> dict[str, list[ExecutionRecord]]:
        """test_key -> its executions inside the index's window, for `cases` (the same as
        `read_histories`, keyed by test key; cases without executions left out).

        The lists are the cache's own: read them, never change them."""
        fresh: list[CaseInfo] = []
        stale: dict[int, list[tuple[CaseInfo, _History]]] = {}
        for case in cases:
            entry = self._entries.get(case.id)
            if entry is None or entry.default_branch != index.default_branch:
                fresh.append(case)
            else:
                stale.setdefault(id(entry.covered), []).append((case, entry))
        out: dict[str, list[ExecutionRecord]] = {}
        if fresh:
            rows: dict[int, list[int]] = {}
            read = await read_histories(engine, fresh, index, run_rows=rows)
            for case in fresh:
                records = read.get(case.id, [])
                entry = _History(
                    index.executions, index.default_branch, records, rows.get(case.id, [])
                )
                self.read_records += len(records)
                self._put(case.id, entry)
                if records:
                    out[case.test_key] = records
        for group in stale.values():
            out.update(await self._bring_up_to_date(engine, group, index))
        self._evict()
        return out

    async def _bring_up_to_date(
        self,
        engine: AsyncEngine,
        group: list[tuple[CaseInfo, _History]],
        index: RunIndex,
    ) -> dict[str, list[ExecutionRecord]]:
        """Histories that cover the same runs (one earlier index): read the runs that entered
        the window or changed, drop those that left it or changed."""
        covered = group[0][1].covered
        now = index.executions
        changed = {run for run, count in covered.items() if now.get(run) != count}
        wanted = (now.keys() - covered.keys()) | (changed & now.keys())
        rows: dict[int, list[int]] = {}
        read = await read_histories(
            engine, [case for case, _ in group], index, run_ids=wanted, run_rows=rows
        )
        out: dict[str, list[ExecutionRecord]] = {}
        for case, entry in group:
            records, runs = entry.records, entry.rows
            if changed:
                kept = [i for i, run in enumerate(runs) if run not in changed]
                records, runs = [records[i] for i in kept], [runs[i] for i in kept]
            added = read.get(case.id)
            if added:
                self.read_records += len(added)
                records, runs = records + added, runs + rows[case.id]
            self._put(case.id, _History(now, index.default_branch, records, runs))
            if records:
                out[case.test_key] = records
        return out

    def _put(self, case_id: int, entry: _History) -> None:
        old = self._entries.pop(case_id, None)
        if old is not None:
            self._size -= len(old.records)
        self._entries[case_id] = entry
        self._size += len(entry.records)

    def _evict(self) -> None:
        while self._size > self.max_records and self._entries:
            _, entry = self._entries.popitem(last=False)
            self._size -= len(entry.records)
