"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flakeguard.core import junit
from tests.conftest import IN_CI


@pytest.fixture(scope="module", params=["compiled", "pure"])
def parser_implementation(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a JUnit test module on both parser loops: compiled (`_junit_speedups`) and pure.

    The compiled loop is built at install when a C compiler is present; without it the
    "compiled" runs skip, except under CI=true, where they fail (CI must test what ships).
    """
    kind = str(request.param)
    if kind == "compiled":
        if not junit.SPEEDUPS:
            message = "flakeguard.core._junit_speedups is not built (no C compiler at install?)"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        yield kind
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(junit, "_scan_cases", None)
        patch.setattr(junit, "_drain_cases", None)
        patch.setattr(junit, "_fast_signature", None)
        yield kind
