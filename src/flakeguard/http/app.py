"""The FastAPI application: health, metrics, management API, webhooks."""

from __future__ import annotations

from fastapi import FastAPI

from flakeguard import __version__
from flakeguard.http import health, queues, webhooks
from flakeguard.http.state import AppState


def create_app(state: AppState) -> FastAPI:
    app = FastAPI(
        title="FlakeGuard worker",
        version=__version__,
        description="Health, metrics, queue management and GitHub webhooks of a FlakeGuard worker.",
    )
    app.state.flakeguard = state
    app.include_router(health.router)
    app.include_router(queues.router_for(state))
    app.include_router(webhooks.router)
    return app


def create_metrics_app(state: AppState) -> FastAPI:
    """Only `/metrics` (and health), for METRICS_PORT when it differs from the health port."""
    app = FastAPI(title="FlakeGuard metrics", version=__version__, openapi_url=None)
    app.state.flakeguard = state
    app.include_router(health.router)
    return app
