"""FlakeGuard: flaky-test detection workers."""

__version__ = "0.1.0"
