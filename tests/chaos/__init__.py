"""Chaos and fuzz tests: bounded, seeded, each under a minute."""
