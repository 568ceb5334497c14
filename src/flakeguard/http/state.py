"""The process state the HTTP layer reads (defined by the composition root)."""

from __future__ import annotations

from flakeguard.bootstrap import AppState

__all__ = ["AppState"]
