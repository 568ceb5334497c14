"""Shared scoring passes: who runs, who waits, what happens on errors and cancellation."""

from __future__ import annotations

import asyncio

import pytest

from flakeguard.processors.coalescing import PassCoalescer


class Passes:
    """A pass function that records its inputs and blocks until released."""

    def __init__(self) -> None:
        self.inputs: list[list[str]] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.fail_with: BaseException | None = None

    async def __call__(self, items: list[str]) -> str:
        self.inputs.append(sorted(items))
        self.started.set()
        await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return f"pass{len(self.inputs)}"


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_callers_arriving_during_a_pass_share_the_next_one() -> None:
    groups: PassCoalescer[str, str, str] = PassCoalescer()
    passes = Passes()
    first = asyncio.create_task(groups.run("repo", {"a": "a"}, passes))
    await passes.started.wait()
    later = [
        asyncio.create_task(groups.run("repo", {k: k for k in keys}, passes))
        for keys in (["b"], ["c", "b"], ["d"])
    ]
    await _settle()
    assert passes.inputs == [["a"]]  # nobody else started a pass meanwhile
    passes.release.set()
    assert await first == "pass1"
    assert await asyncio.gather(*later) == ["pass2", "pass2", "pass2"]
    assert passes.inputs == [["a"], ["b", "c", "d"]]
    assert (groups.passes, groups.joined) == (2, 4)


async def test_other_keys_do_not_wait() -> None:
    groups: PassCoalescer[str, str, str] = PassCoalescer()
    slow, fast = Passes(), Passes()
    fast.release.set()
    blocked = asyncio.create_task(groups.run("one", {"a": "a"}, slow))
    await slow.started.wait()
    assert await groups.run("two", {"b": "b"}, fast) == "pass1"
    slow.release.set()
    assert await blocked == "pass1"


async def test_a_failed_pass_fails_every_member_and_the_next_batch_runs_afresh() -> None:
    groups: PassCoalescer[str, str, str] = PassCoalescer()
    passes = Passes()
    first = asyncio.create_task(groups.run("repo", {"a": "a"}, passes))
    await passes.started.wait()
    members = [asyncio.create_task(groups.run("repo", {k: k}, passes)) for k in "bc"]
    await _settle()
    passes.fail_with = RuntimeError("database went away")
    passes.release.set()
    with pytest.raises(RuntimeError):
        await first
    results = await asyncio.gather(*members, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    passes.fail_with = None
    assert await groups.run("repo", {"d": "d"}, passes) == "pass3"


async def test_a_cancelled_leader_hands_its_batch_over() -> None:
    groups: PassCoalescer[str, str, str] = PassCoalescer()
    running = Passes()
    first = asyncio.create_task(groups.run("repo", {"a": "a"}, running))
    await running.started.wait()
    # "b" leads the next batch and waits for the lock; "c" joins it.
    leader = asyncio.create_task(groups.run("repo", {"b": "b"}, running))
    await _settle()
    member = asyncio.create_task(groups.run("repo", {"c": "c"}, running))
    await _settle()
    leader.cancel()
    running.release.set()
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert await first == "pass1"
    assert await member == "pass2"
    # The member re-ran alone: the cancelled leader's item is not scored for nobody.
    assert running.inputs == [["a"], ["c"]]
