"""A faithful GitHub API emulator (App auth, Actions runs and artifacts, check runs, webhooks).

Used by the e2e tests, the load test and the demo; see docs/emulator.md.
"""

from flakeguard.emulator.faults import Fault, FaultBook, FaultKind, FaultTarget
from flakeguard.emulator.scenario import (
    ArtifactSpec,
    InstallationSpec,
    RepoSpec,
    RunSpec,
    Scenario,
    ScenarioError,
    load_scenario,
    zip_folder,
    zip_members,
)
from flakeguard.emulator.server import (
    Emulator,
    RunningEmulator,
    WebhookDelivery,
    generated_private_key_pem,
    main,
    run_emulator,
    start_emulator,
)
from flakeguard.emulator.state import AuthKind, CheckRunRecord, RequestRecord

__all__ = [
    "ArtifactSpec",
    "AuthKind",
    "CheckRunRecord",
    "Emulator",
    "Fault",
    "FaultBook",
    "FaultKind",
    "FaultTarget",
    "InstallationSpec",
    "RepoSpec",
    "RequestRecord",
    "RunSpec",
    "RunningEmulator",
    "Scenario",
    "ScenarioError",
    "WebhookDelivery",
    "generated_private_key_pem",
    "load_scenario",
    "main",
    "run_emulator",
    "start_emulator",
    "zip_folder",
    "zip_members",
]
