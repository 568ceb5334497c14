"""`flakeguard load-test`: real worker processes against the GitHub emulator, measured.

See docs/load-test.md for the scenarios, the figures and the exact commands.
"""

from flakeguard.loadtest.faults import FaultPlan, FaultSpecError, Outage, parse_faults
from flakeguard.loadtest.run import (
    LoadReport,
    LoadTest,
    LoadTestConfig,
    LoadTestError,
    percentile,
    run_load_test,
)

__all__ = [
    "FaultPlan",
    "FaultSpecError",
    "LoadReport",
    "LoadTest",
    "LoadTestConfig",
    "LoadTestError",
    "Outage",
    "parse_faults",
    "percentile",
    "run_load_test",
]
