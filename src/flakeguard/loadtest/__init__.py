"""`flakeguard load-test`: real worker processes against the GitHub emulator, measured.

See docs/load-test.md for the scenarios, the figures and the exact commands. Import the
pieces from `flakeguard.loadtest.run` and `.faults`: this package imports nothing heavy,
so registering the CLI command stays cheap.
"""
