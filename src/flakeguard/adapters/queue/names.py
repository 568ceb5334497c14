"""Queue names, their spellings, and BullMQ priority numbers."""

from __future__ import annotations

from enum import StrEnum
from urllib.parse import unquote

from flakeguard.core.models import Priority


class QueueName(StrEnum):
    RUNS_INGEST = "runs-ingest"
    RUNS_ANALYZE = "runs-analyze"
    TESTS_RECOMPUTE = "tests-recompute"
    POLLING = "polling"


ALL_QUEUES: tuple[QueueName, ...] = tuple(QueueName)

PRIORITY_NUMBERS: dict[Priority, int] = {
    Priority.CRITICAL: 1,
    Priority.HIGH: 2,
    Priority.NORMAL: 3,
    Priority.LOW: 4,
}
"""BullMQ runs priority 0 before every prioritised job, so every job gets one of these."""


class UnknownQueueError(ValueError):
    pass


def parse_queue_name(raw: str) -> QueueName:
    """Accept every user-facing spelling: `runs-ingest`, the spec's `runs:ingest`,
    URL-encoded `runs%3Aingest`, and the cluster hash-tagged `{runs-ingest}`.

    >>> parse_queue_name("runs%3Aingest")
    <QueueName.RUNS_INGEST: 'runs-ingest'>
    """
    name = unquote(raw).strip().strip("{}").lower().replace(":", "-").replace("_", "-")
    try:
        return QueueName(name)
    except ValueError:
        known = ", ".join(q.value for q in QueueName)
        raise UnknownQueueError(f"unknown queue {raw[:60]!r}; known: {known}") from None


def redis_queue_name(queue: QueueName, *, cluster: bool) -> str:
    """The name BullMQ sees: hash-tagged on Redis Cluster so a queue's keys share one slot."""
    return f"{{{queue.value}}}" if cluster else queue.value
