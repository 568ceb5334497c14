"""The collector thresholds of the worker and of batch commands."""

from __future__ import annotations

import gc

import pytest

from flakeguard.gc_tuning import GC_THRESHOLDS, collecting_rarely


def test_collecting_rarely_sets_the_worker_thresholds_and_restores_them() -> None:
    before = gc.get_threshold()
    assert before != GC_THRESHOLDS
    with collecting_rarely():
        assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_threshold() == before
    with pytest.raises(RuntimeError), collecting_rarely():
        raise RuntimeError
    assert gc.get_threshold() == before
