"""What the emulated GitHub contains: the app, installations, repositories, runs, artifacts.

A `Scenario` is plain data, built in code or loaded from a directory (`load_scenario`, format in
docs/emulator.md). Artifact bytes live in an `ArtifactStore` keyed by a template name, so thousands
of runs can share one ZIP (zipped once, served many times).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_APP_ID = 424242
DEFAULT_SCENARIO_FILE = "scenario.json"


class ScenarioError(ValueError):
    """scenario.json (or an artifact it names) is invalid; the message says where."""


@dataclass(frozen=True, slots=True)
class AppSpec:
    id: int = DEFAULT_APP_ID
    slug: str = "flakeguard-emulated"
    name: str = "FlakeGuard (emulated)"
    client_id: str = "Iv1.0123456789abcdef"
    owner_login: str = "flakeguard"


@dataclass(frozen=True, slots=True)
class InstallationSpec:
    id: int
    account_login: str
    account_type: str = "Organization"
    account_id: int = 0


@dataclass(frozen=True, slots=True)
class RepoSpec:
    id: int
    owner: str
    name: str
    installation_id: int
    default_branch: str = "main"
    private: bool = False

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass(frozen=True, slots=True)
class ArtifactSpec:
    """One artifact of a run; `template` names the bytes in the `ArtifactStore`."""

    id: int
    name: str
    template: str
    expired: bool = False
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One attempt of one workflow run (several attempts share `id`)."""

    id: int
    repo_id: int
    head_sha: str
    attempt: int = 1
    head_branch: str | None = "main"
    event: str = "push"
    status: str = "completed"
    conclusion: str | None = "success"
    created_at: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    updated_at: datetime | None = None
    run_started_at: datetime | None = None
    pr_numbers: tuple[int, ...] = ()
    workflow_name: str = "CI"
    workflow_id: int = 1
    workflow_path: str = ".github/workflows/ci.yml"
    run_number: int = 1
    artifacts: tuple[ArtifactSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class Scenario:
    app: AppSpec = field(default_factory=AppSpec)
    installations: tuple[InstallationSpec, ...] = ()
    repos: tuple[RepoSpec, ...] = ()
    runs: tuple[RunSpec, ...] = ()
    artifact_templates: dict[str, bytes] = field(default_factory=dict)
    """Template name → ZIP bytes (shared by every artifact that names the template)."""
    private_key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class StoredBlob:
    data: bytes
    sha256_hex: str


class ArtifactStore:
    """ZIP bytes by template name, with their digests computed once."""

    def __init__(self) -> None:
        self._blobs: dict[str, StoredBlob] = {}

    def put(self, template: str, data: bytes) -> StoredBlob:
        blob = StoredBlob(data, hashlib.sha256(data).hexdigest())
        self._blobs[template] = blob
        return blob

    def get(self, template: str) -> StoredBlob | None:
        return self._blobs.get(template)

    def __contains__(self, template: str) -> bool:
        return template in self._blobs


def zip_folder(folder: Path) -> bytes:
    """The folder's files as a deflated ZIP (member names relative to the folder, sorted)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def zip_members(members: dict[str, bytes]) -> bytes:
    """A deflated ZIP of `members` (name → bytes), e.g. for programmatic templates."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _time(raw: Any, where: str) -> datetime:
    if not isinstance(raw, str):
        raise ScenarioError(f"{where}: expected an ISO 8601 date-time string")
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ScenarioError(f"{where}: {raw!r} is not an ISO 8601 date-time") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _require(data: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ScenarioError(f"{where}: {key!r} is required and must be {kind.__name__}")
    return value


def _load_artifact_bytes(directory: Path, file_name: str, where: str) -> bytes:
    path = (directory / file_name).resolve()
    if not path.is_relative_to(directory.resolve()):
        raise ScenarioError(f"{where}: {file_name!r} is outside the scenario directory")
    if path.is_dir():
        return zip_folder(path)
    if path.is_file():
        if path.suffix.lower() == ".zip":
            return path.read_bytes()
        return zip_members({path.name: path.read_bytes()})
    raise ScenarioError(f"{where}: artifact file {file_name!r} does not exist")


def load_scenario(directory: Path) -> Scenario:
    """Read `directory/scenario.json` and its artifact files (format: docs/emulator.md)."""
    directory = Path(directory)
    manifest = directory / DEFAULT_SCENARIO_FILE
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"cannot read {manifest}: {exc.strerror}") from None
    except ValueError as exc:
        raise ScenarioError(f"{manifest} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{manifest}: the top level must be an object")

    app_data = data.get("app") or {}
    defaults = AppSpec()
    app = AppSpec(
        id=int(app_data.get("id", DEFAULT_APP_ID)),
        slug=str(app_data.get("slug", defaults.slug)),
        name=str(app_data.get("name", defaults.name)),
        client_id=str(app_data.get("client_id", defaults.client_id)),
    )
    key_file = app_data.get("private_key_file")
    private_key_file = directory / key_file if isinstance(key_file, str) else None

    installations = []
    for index, item in enumerate(data.get("installations") or []):
        where = f"installations[{index}]"
        installations.append(
            InstallationSpec(
                id=_require(item, "id", int, where),
                account_login=_require(item, "account", str, where),
                account_type=str(item.get("account_type", "Organization")),
                account_id=int(item.get("account_id", 1000 + index)),
            )
        )
    known_installations = {i.id for i in installations}

    repos = []
    repo_ids: dict[str, int] = {}
    for index, item in enumerate(data.get("repos") or []):
        where = f"repos[{index}]"
        full_name = _require(item, "full_name", str, where)
        owner, sep, name = full_name.partition("/")
        if not sep:
            raise ScenarioError(f"{where}: full_name must be owner/name")
        installation_id = _require(item, "installation_id", int, where)
        if installation_id not in known_installations:
            raise ScenarioError(f"{where}: unknown installation_id {installation_id}")
        repo = RepoSpec(
            id=int(item.get("id", 10_000 + index)),
            owner=owner,
            name=name,
            installation_id=installation_id,
            default_branch=str(item.get("default_branch", "main")),
            private=bool(item.get("private", False)),
        )
        repos.append(repo)
        repo_ids[full_name] = repo.id

    templates: dict[str, bytes] = {}
    runs = []
    next_artifact_id = 500_000
    for index, item in enumerate(data.get("runs") or []):
        where = f"runs[{index}]"
        repo_name = _require(item, "repo", str, where)
        if repo_name not in repo_ids:
            raise ScenarioError(f"{where}: unknown repo {repo_name!r}")
        artifacts = []
        for a_index, art in enumerate(item.get("artifacts") or []):
            a_where = f"{where}.artifacts[{a_index}]"
            file_name = _require(art, "file", str, a_where)
            if file_name not in templates:
                templates[file_name] = _load_artifact_bytes(directory, file_name, a_where)
            next_artifact_id += 1
            artifacts.append(
                ArtifactSpec(
                    id=int(art.get("id", next_artifact_id)),
                    name=str(art.get("name", Path(file_name).stem)),
                    template=file_name,
                    expired=bool(art.get("expired", False)),
                )
            )
        pr_number = item.get("pr_number")
        created_at = _time(item.get("created_at", "2026-01-01T00:00:00Z"), f"{where}.created_at")
        runs.append(
            RunSpec(
                id=_require(item, "id", int, where),
                repo_id=repo_ids[repo_name],
                head_sha=_require(item, "head_sha", str, where),
                attempt=int(item.get("attempt", 1)),
                head_branch=item.get("head_branch", "main"),
                event=str(item.get("event", "push")),
                status=str(item.get("status", "completed")),
                conclusion=item.get("conclusion", "success"),
                created_at=created_at,
                updated_at=(
                    _time(item["updated_at"], f"{where}.updated_at")
                    if "updated_at" in item
                    else None
                ),
                pr_numbers=(pr_number,) if isinstance(pr_number, int) else (),
                workflow_name=str(item.get("workflow", "CI")),
                workflow_id=int(item.get("workflow_id", 1)),
                workflow_path=str(item.get("workflow_path", ".github/workflows/ci.yml")),
                run_number=int(item.get("run_number", index + 1)),
                artifacts=tuple(artifacts),
            )
        )
    return Scenario(
        app=app,
        installations=tuple(installations),
        repos=tuple(repos),
        runs=tuple(runs),
        artifact_templates=templates,
        private_key_file=private_key_file,
    )
