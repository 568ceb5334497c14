"""The GitHub App client: the ~10 REST endpoints the worker uses, on `transport.HttpWire`.

Contract (see notes/github.md):
- Authentication: the App JWT on `/app*`, an installation token everywhere else (auth.py).
  A 401 for a token created < 5 s ago is retried (replication delay, as octokit/auth-app does);
  a 401 for an older cached token drops it and retries once with a new one; otherwise 401 fails.
- Throttling, rate limits and retries are octokit's (throttle.py). A wait longer than
  `max_inline_wait_s` raises `GitHubRateLimited(retry_after_s=...)`; 5xx retried `max_retries`
  times with `(n + 1)² × retry_base_s` then `GitHubServerError`; other 4xx `GitHubClientError`.
- Pagination follows the `Link` header only (URLs are never built for pages 2+).
- Artifact downloads follow the 302 by hand to the blob host without `Authorization`.
- Check runs are clamped to GitHub's limits before sending (65,535-character summary/text,
  50 annotations per request — the rest appended by further PATCHes —, 3 actions).
- No token, JWT or key appears in a log line, repr or exception message.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import TracebackType
from typing import Any, BinaryIO, Protocol, Self
from urllib.parse import quote

import httpx
import structlog

from flakeguard.adapters.github.auth import (
    AppJwtSigner,
    Clock,
    InstallationToken,
    InstallationTokenCache,
)
from flakeguard.adapters.github.throttle import (
    RateLimitState,
    Sleep,
    Throttle,
    backoff_s,
    parse_rate_limit,
    plan_retry,
)
from flakeguard.adapters.github.transport import HttpResponse, HttpWire
from flakeguard.core.reporting import (
    Action,
    Annotation,
)
from flakeguard.errors import (
    ArtifactExpired,
    GitHubClientError,
    GitHubRateLimited,
    GitHubServerError,
    PermanentJobError,
    TransientJobError,
)

API_VERSION = "2022-11-28"
MAX_OUTPUT_CHARS = 65_535
MAX_ANNOTATIONS_PER_REQUEST = 50
MAX_ACTIONS = 3
MAX_ACTION_LABEL_CHARS = 20
MAX_ACTION_DESCRIPTION_CHARS = 40
MAX_ANNOTATION_TITLE_CHARS = 255
MAX_ANNOTATION_MESSAGE_CHARS = 65_535
TRUNCATION_MARKER = "\n\n… (truncated by FlakeGuard: GitHub allows 65,535 characters)"
_MAX_PER_PAGE = 100
_ERROR_MESSAGE_CHARS = 200
_CHUNK_BYTES = 64 * 1024

_log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class GitHubConfig:
    """Everything the client needs; `private_key_pem` is secret (kept out of the repr)."""

    app_id: str
    private_key_pem: str = field(repr=False)
    api_url: str = "https://api.github.com"
    user_agent: str = "flakeguard-worker"
    max_concurrency: int = 10
    write_spacing_s: float = 1.0
    retry_base_s: float = 1.0
    """5xx backoff scale: the n-th retry waits (n + 1)² × retry_base_s."""
    max_retries: int = 3
    max_inline_wait_s: float = 10.0
    request_timeout_s: float = 30.0


class GitHubObserver(Protocol):
    """Metrics hook (the worker implements it with Prometheus)."""

    def on_response(self, endpoint: str, status: int, duration_s: float) -> None: ...

    def on_rate_limit(
        self,
        installation_id: int | None,
        resource: str,
        remaining: int,
        limit: int,
        reset_epoch_s: int,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class RepoCoords:
    """Where a repository is and which installation may act on it."""

    owner: str
    name: str
    installation_id: int

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass(frozen=True, slots=True)
class Installation:
    id: int
    account_login: str
    account_type: str
    repository_selection: str
    suspended: bool


@dataclass(frozen=True, slots=True)
class RepoInfo:
    owner: str
    name: str
    id: int
    default_branch: str
    installation_id: int

    @property
    def coords(self) -> RepoCoords:
        return RepoCoords(self.owner, self.name, self.installation_id)


@dataclass(frozen=True, slots=True)
class WorkflowRunInfo:
    """One attempt of a workflow run, with what the worker needs (notes §2 "Worker needs")."""

    id: int
    run_attempt: int
    head_sha: str
    head_branch: str | None
    event: str
    status: str | None
    conclusion: str | None
    created_at: datetime
    run_started_at: datetime | None
    updated_at: datetime
    name: str | None
    """The workflow's name."""
    workflow_id: int
    pull_request_numbers: tuple[int, ...]
    repository_full_name: str


@dataclass(frozen=True, slots=True)
class RunsPage:
    """Runs of one listing; `not_modified` when GitHub answered 304 to `If-None-Match`."""

    runs: list[WorkflowRunInfo]
    etag: str | None
    not_modified: bool


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    id: int
    name: str
    size_in_bytes: int
    expired: bool
    archive_download_url: str
    digest: str | None = None
    expires_at: datetime | None = None


class CheckRunStatus(StrEnum):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


class CheckRunConclusion(StrEnum):
    ACTION_REQUIRED = "action_required"
    CANCELLED = "cancelled"
    FAILURE = "failure"
    NEUTRAL = "neutral"
    SUCCESS = "success"
    SKIPPED = "skipped"
    TIMED_OUT = "timed_out"


@dataclass(frozen=True, slots=True)
class CheckRunBody:
    """What to show in a check run. Limits are applied by the client, not by the caller."""

    name: str
    head_sha: str
    status: CheckRunStatus = CheckRunStatus.COMPLETED
    conclusion: CheckRunConclusion | None = None
    title: str = ""
    summary: str = ""
    text: str | None = None
    annotations: Sequence[Annotation] = ()
    actions: Sequence[Action] = ()

    def __post_init__(self) -> None:
        if len(self.actions) > MAX_ACTIONS:
            raise ValueError(f"GitHub allows at most {MAX_ACTIONS} check-run actions")
        if self.status is CheckRunStatus.COMPLETED and self.conclusion is None:
            raise ValueError("a completed check run needs a conclusion")


def truncate_output(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    """`text` if it fits in `limit` characters, else its head plus `TRUNCATION_MARKER`."""
    if len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _annotation_json(annotation: Annotation) -> dict[str, Any]:
    body: dict[str, Any] = {
        "path": annotation.path,
        "start_line": annotation.start_line,
        "end_line": annotation.end_line,
        "annotation_level": str(annotation.annotation_level),
        "message": truncate_output(annotation.message, MAX_ANNOTATION_MESSAGE_CHARS),
    }
    if annotation.title is not None:
        body["title"] = _shorten(annotation.title, MAX_ANNOTATION_TITLE_CHARS)
    if annotation.raw_details is not None:
        body["raw_details"] = truncate_output(annotation.raw_details, MAX_ANNOTATION_MESSAGE_CHARS)
    return body


def _output_json(body: CheckRunBody, annotations: Sequence[Annotation]) -> dict[str, Any]:
    output: dict[str, Any] = {
        "title": body.title,
        "summary": truncate_output(body.summary),
    }
    if body.text is not None:
        output["text"] = truncate_output(body.text)
    if annotations:
        output["annotations"] = [_annotation_json(a) for a in annotations]
    return output


def check_run_requests(body: CheckRunBody) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The first request body (create or update) and the PATCH bodies appending the rest.

    Example: 120 annotations → the first body carries 50, then two PATCHes carry 50 and 20.
    """
    chunks = [
        body.annotations[i : i + MAX_ANNOTATIONS_PER_REQUEST]
        for i in range(0, len(body.annotations), MAX_ANNOTATIONS_PER_REQUEST)
    ] or [()]
    first: dict[str, Any] = {
        "name": body.name,
        "head_sha": body.head_sha,
        "status": str(body.status),
        "output": _output_json(body, chunks[0]),
    }
    if body.conclusion is not None:
        first["conclusion"] = str(body.conclusion)
    if body.actions:
        first["actions"] = [
            {
                "label": _shorten(a.label, MAX_ACTION_LABEL_CHARS),
                "description": _shorten(a.description, MAX_ACTION_DESCRIPTION_CHARS),
                "identifier": a.identifier,
            }
            for a in body.actions
        ]
    rest = [{"output": _output_json(body, chunk)} for chunk in chunks[1:]]
    return first, rest


class _Auth(StrEnum):
    APP = "app"
    INSTALLATION = "installation"


def _message_of(response: HttpResponse) -> str:
    """GitHub's `message` field (short), or the start of the body; never request headers."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:_ERROR_MESSAGE_CHARS]
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])[:_ERROR_MESSAGE_CHARS]
    return ""


def _field(data: Mapping[str, Any], key: str, kind: type, *, nullable: bool = False) -> Any:
    value = data.get(key)
    if value is None and nullable:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise PermanentJobError(f"unexpected GitHub response: field {key!r} is not {kind.__name__}")
    return value


def _time(data: Mapping[str, Any], key: str) -> datetime | None:
    raw = _field(data, key, str, nullable=True)
    return None if raw is None else datetime.fromisoformat(raw)


def _required_time(data: Mapping[str, Any], key: str) -> datetime:
    value = _time(data, key)
    if value is None:
        raise PermanentJobError(f"unexpected GitHub response: field {key!r} is null")
    return value


def _parse_run(data: Mapping[str, Any]) -> WorkflowRunInfo:
    prs = data.get("pull_requests") or []
    repository = _field(data, "repository", dict)
    return WorkflowRunInfo(
        id=_field(data, "id", int),
        run_attempt=_field(data, "run_attempt", int, nullable=True) or 1,
        head_sha=_field(data, "head_sha", str),
        head_branch=_field(data, "head_branch", str, nullable=True),
        event=_field(data, "event", str),
        status=_field(data, "status", str, nullable=True),
        conclusion=_field(data, "conclusion", str, nullable=True),
        created_at=_required_time(data, "created_at"),
        run_started_at=_time(data, "run_started_at"),
        updated_at=_required_time(data, "updated_at"),
        name=_field(data, "name", str, nullable=True),
        workflow_id=_field(data, "workflow_id", int),
        pull_request_numbers=tuple(_field(pr, "number", int) for pr in prs),
        repository_full_name=_field(repository, "full_name", str),
    )


def _parse_artifact(data: Mapping[str, Any]) -> ArtifactInfo:
    return ArtifactInfo(
        id=_field(data, "id", int),
        name=_field(data, "name", str),
        size_in_bytes=_field(data, "size_in_bytes", int),
        expired=_field(data, "expired", bool),
        archive_download_url=_field(data, "archive_download_url", str),
        digest=_field(data, "digest", str, nullable=True),
        expires_at=_time(data, "expires_at"),
    )


def _q(segment: str) -> str:
    return quote(segment, safe="")


def _repo_path(repo: RepoCoords) -> str:
    return f"/repos/{_q(repo.owner)}/{_q(repo.name)}"


class GitHubClient:
    """Async GitHub App client. Use as `async with GitHubClient(config) as gh:`.

    `clock`/`sleep` are injectable for tests (defaults: `time.time`, `asyncio.sleep`).
    """

    def __init__(
        self,
        config: GitHubConfig,
        *,
        observer: GitHubObserver | None = None,
        clock: Clock = time.time,
        sleep: Sleep | None = None,
    ) -> None:
        self._config = config
        self._observer = observer
        self._clock = clock
        self._api_url = config.api_url.rstrip("/")
        self._http = HttpWire(user_agent=config.user_agent, timeout_s=config.request_timeout_s)
        throttle_kwargs: dict[str, Any] = {"clock": clock}
        if sleep is not None:
            throttle_kwargs["sleep"] = sleep
        self._throttle = Throttle(
            max_concurrency=config.max_concurrency,
            write_spacing_s=config.write_spacing_s,
            max_inline_wait_s=config.max_inline_wait_s,
            **throttle_kwargs,
        )
        self._jwt = AppJwtSigner(config.app_id, config.private_key_pem, clock=clock)
        self._tokens = InstallationTokenCache(clock=clock)

    def __repr__(self) -> str:
        return f"GitHubClient(api_url={self._api_url!r}, app_id={self._config.app_id!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def rate_limit_snapshot(self) -> dict[int | None, RateLimitState]:
        """Last rate-limit figures per installation id (None: the app's own JWT budget)."""
        return self._throttle.snapshot()

    # ---- endpoints -------------------------------------------------------------------------

    async def list_installations(self) -> list[Installation]:
        items, _, _ = await self._paginate(
            "/app/installations",
            endpoint="GET /app/installations",
            auth=_Auth.APP,
            installation_id=None,
            params={"per_page": _MAX_PER_PAGE},
            items_key=None,
        )
        result = []
        for item in items:
            account = _field(item, "account", dict, nullable=True) or {}
            result.append(
                Installation(
                    id=_field(item, "id", int),
                    account_login=str(account.get("login") or account.get("slug") or ""),
                    account_type=str(account.get("type") or item.get("target_type") or ""),
                    repository_selection=str(item.get("repository_selection") or ""),
                    suspended=item.get("suspended_at") is not None,
                )
            )
        return result

    async def list_installation_repositories(self, installation_id: int) -> list[RepoInfo]:
        items, _, _ = await self._paginate(
            "/installation/repositories",
            endpoint="GET /installation/repositories",
            auth=_Auth.INSTALLATION,
            installation_id=installation_id,
            params={"per_page": _MAX_PER_PAGE},
            items_key="repositories",
        )
        return [
            RepoInfo(
                owner=_field(_field(item, "owner", dict), "login", str),
                name=_field(item, "name", str),
                id=_field(item, "id", int),
                default_branch=_field(item, "default_branch", str),
                installation_id=installation_id,
            )
            for item in items
        ]

    async def list_workflow_runs(
        self,
        repo: RepoCoords,
        *,
        status: str = "completed",
        created_since: datetime | None = None,
        per_page: int = 100,
        max_pages: int | None = None,
        etag: str | None = None,
    ) -> RunsPage:
        """Runs of the repository, newest first; `etag` makes the first page conditional."""
        params: dict[str, Any] = {"per_page": min(max(per_page, 1), _MAX_PER_PAGE)}
        if status:
            params["status"] = status
        if created_since is not None:
            params["created"] = ">=" + created_since.strftime("%Y-%m-%dT%H:%M:%SZ")
        items, new_etag, not_modified = await self._paginate(
            f"{_repo_path(repo)}/actions/runs",
            endpoint="GET /repos/{owner}/{repo}/actions/runs",
            auth=_Auth.INSTALLATION,
            installation_id=repo.installation_id,
            params=params,
            items_key="workflow_runs",
            max_pages=max_pages,
            etag=etag,
        )
        return RunsPage([_parse_run(i) for i in items], new_etag, not_modified)

    async def get_workflow_run(
        self, repo: RepoCoords, run_id: int, attempt: int | None = None
    ) -> WorkflowRunInfo:
        path = f"{_repo_path(repo)}/actions/runs/{run_id}"
        endpoint = "GET /repos/{owner}/{repo}/actions/runs/{run_id}"
        if attempt is not None:
            path += f"/attempts/{attempt}"
            endpoint += "/attempts/{attempt_number}"
        response = await self._send(
            "GET",
            self._api_url + path,
            endpoint=endpoint,
            auth=_Auth.INSTALLATION,
            installation_id=repo.installation_id,
        )
        return _parse_run(self._json_object(response))

    async def list_run_artifacts(self, repo: RepoCoords, run_id: int) -> list[ArtifactInfo]:
        items, _, _ = await self._paginate(
            f"{_repo_path(repo)}/actions/runs/{run_id}/artifacts",
            endpoint="GET /repos/{owner}/{repo}/actions/runs/{run_id}/artifacts",
            auth=_Auth.INSTALLATION,
            installation_id=repo.installation_id,
            params={"per_page": _MAX_PER_PAGE},
            items_key="artifacts",
        )
        return [_parse_artifact(i) for i in items]

    async def download_artifact(
        self, repo: RepoCoords, artifact_id: int, sink: BinaryIO, *, max_bytes: int
    ) -> int:
        """Stream the artifact ZIP into `sink`; returns the byte count.

        `ArtifactExpired` on 410; `PermanentJobError` once more than `max_bytes` arrive (the sink
        then holds a partial file); the blob request never carries `Authorization`.
        """
        endpoint = "GET /repos/{owner}/{repo}/actions/artifacts/{artifact_id}/zip"
        url = f"{self._api_url}{_repo_path(repo)}/actions/artifacts/{artifact_id}/zip"
        for redirect_attempt in range(2):
            try:
                response = await self._send(
                    "GET",
                    url,
                    endpoint=endpoint,
                    auth=_Auth.INSTALLATION,
                    installation_id=repo.installation_id,
                )
            except GitHubClientError as exc:
                if exc.status == 410:
                    raise ArtifactExpired(
                        f"artifact {artifact_id} of {repo.full_name} has expired (410)"
                    ) from None
                raise
            location = response.headers.get("location")
            if response.status_code not in (301, 302, 303, 307, 308) or not location:
                raise GitHubClientError(
                    f"artifact {artifact_id}: expected a redirect, got {response.status_code}",
                    status=response.status_code,
                )
            written = await self._download_blob(location, artifact_id, sink, max_bytes=max_bytes)
            if written is not None:
                return written
            _log.info(
                "github.artifact.url_expired", artifact_id=artifact_id, retry=redirect_attempt
            )
        raise TransientJobError(f"artifact {artifact_id}: the blob URL was refused twice")

    async def find_check_run(self, repo: RepoCoords, head_sha: str, name: str) -> int | None:
        """Id of the latest check run called `name` on `head_sha` (made by this app), or None."""
        params: dict[str, Any] = {"check_name": name, "filter": "latest", "per_page": 100}
        if self._config.app_id.isdigit():
            params["app_id"] = int(self._config.app_id)
        response = await self._send(
            "GET",
            f"{self._api_url}{_repo_path(repo)}/commits/{_q(head_sha)}/check-runs",
            endpoint="GET /repos/{owner}/{repo}/commits/{ref}/check-runs",
            auth=_Auth.INSTALLATION,
            installation_id=repo.installation_id,
            params=params,
        )
        runs = _field(self._json_object(response), "check_runs", list)
        ids = [_field(run, "id", int) for run in runs if run.get("name") == name]
        return max(ids) if ids else None

    async def create_check_run(self, repo: RepoCoords, body: CheckRunBody) -> int:
        """Create the check run (first 50 annotations), append the rest; returns its id."""
        first, rest = check_run_requests(body)
        response = await self._send(
            "POST",
            f"{self._api_url}{_repo_path(repo)}/check-runs",
            endpoint="POST /repos/{owner}/{repo}/check-runs",
            auth=_Auth.INSTALLATION,
            installation_id=repo.installation_id,
            json=first,
        )
        check_run_id: int = _field(self._json_object(response), "id", int)
        await self._append_annotations(repo, check_run_id, rest)
        return check_run_id

    async def update_check_run(
        self, repo: RepoCoords, check_run_id: int, body: CheckRunBody
    ) -> None:
        """PATCH the check run; GitHub appends the annotations to those it already has."""
        first, rest = check_run_requests(body)
        first.pop("head_sha")
        await self._patch_check_run(repo, check_run_id, first)
        await self._append_annotations(repo, check_run_id, rest)

    # ---- plumbing ----------------------------------------------------------------------------

    async def _append_annotations(
        self, repo: RepoCoords, check_run_id: int, bodies: list[dict[str, Any]]
    ) -> None:
        for patch in bodies:
            await self._patch_check_run(repo, check_run_id, patch)

    async def _patch_check_run(
        self, repo: RepoCoords, check_run_id: int, payload: dict[str, Any]
    ) -> None:
        await self._send(
            "PATCH",
            f"{self._api_url}{_repo_path(repo)}/check-runs/{check_run_id}",
            endpoint="PATCH /repos/{owner}/{repo}/check-runs/{check_run_id}",
            auth=_Auth.INSTALLATION,
            installation_id=repo.installation_id,
            json=payload,
        )

    @staticmethod
    def _json_object(response: HttpResponse) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            raise PermanentJobError("unexpected GitHub response: not JSON") from None
        if not isinstance(data, dict):
            raise PermanentJobError("unexpected GitHub response: not a JSON object")
        return data

    async def _paginate(
        self,
        path: str,
        *,
        endpoint: str,
        auth: _Auth,
        installation_id: int | None,
        params: dict[str, Any],
        items_key: str | None,
        max_pages: int | None = None,
        etag: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None, bool]:
        """All items over the `Link: rel="next"` chain; (items, first page ETag, not_modified)."""
        url: str | None = self._api_url + path
        page_params: dict[str, Any] | None = params
        extra_headers = {"If-None-Match": etag} if etag else None
        items: list[dict[str, Any]] = []
        first_etag: str | None = None
        pages = 0
        while url is not None and (max_pages is None or pages < max_pages):
            response = await self._send(
                "GET",
                url,
                endpoint=endpoint,
                auth=auth,
                installation_id=installation_id,
                params=page_params,
                headers=extra_headers,
            )
            if pages == 0:
                first_etag = response.headers.get("etag")
                if response.status_code == 304:
                    return [], first_etag or etag, True
            pages += 1
            data = response.json()
            page_items = data if items_key is None else data.get(items_key)
            if not isinstance(page_items, list):
                raise PermanentJobError(f"unexpected GitHub response for {endpoint}: no list")
            items.extend(page_items)
            next_link = response.links.get("next")
            url = next_link.get("url") if next_link else None
            # The next URL carries every query parameter; only the first page is conditional.
            page_params, extra_headers = None, None
        return items, first_etag, False

    async def _authorization(
        self, auth: _Auth, installation_id: int | None
    ) -> tuple[str, InstallationToken | None]:
        if auth is _Auth.APP:
            return "Bearer " + self._jwt.jwt(), None
        if installation_id is None:
            raise ValueError("an installation id is required for installation-token requests")
        token = await self._tokens.get(installation_id, self._mint_token)
        return "Bearer " + token.token, token

    async def _mint_token(self, installation_id: int) -> InstallationToken:
        response = await self._send(
            "POST",
            f"{self._api_url}/app/installations/{installation_id}/access_tokens",
            endpoint="POST /app/installations/{installation_id}/access_tokens",
            auth=_Auth.APP,
            installation_id=None,
            is_auth=True,
        )
        data = self._json_object(response)
        expires_at = _required_time(data, "expires_at")
        _log.info("github.token.created", installation_id=installation_id)
        return InstallationToken(
            installation_id=installation_id,
            token=_field(data, "token", str),
            expires_at_epoch_s=expires_at.timestamp(),
            created_at_epoch_s=self._clock(),
        )

    def _observe(
        self, endpoint: str, installation_id: int | None, response: HttpResponse, started: float
    ) -> None:
        duration_s = time.perf_counter() - started
        state = parse_rate_limit(response.headers)
        if state is not None:
            self._throttle.record(installation_id, state)
        if self._observer is not None:
            self._observer.on_response(endpoint, response.status_code, duration_s)
            if state is not None:
                self._observer.on_rate_limit(
                    installation_id, state.resource, state.remaining, state.limit,
                    state.reset_epoch_s,
                )  # fmt: skip

    async def _send(
        self,
        method: str,
        url: str,
        *,
        endpoint: str,
        auth: _Auth,
        installation_id: int | None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        is_auth: bool = False,
    ) -> HttpResponse:
        """One API request with throttling, rate-limit waits, retries and token refresh."""
        config = self._config
        is_write = method not in ("GET", "HEAD")
        retry_count = 0
        replication_retries = 0
        token_renewed = False
        while True:
            authorization, token = await self._authorization(auth, installation_id)
            request_headers = {
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "Authorization": authorization,
                **(headers or {}),
            }
            async with self._throttle.slot(installation_id, is_write=is_write, is_auth=is_auth):
                started = time.perf_counter()
                try:
                    response = await self._http.request(
                        method, url, params=params, json=json, headers=request_headers
                    )
                except httpx.TransportError as exc:
                    reason = f"GitHub {method} {endpoint}: network error ({type(exc).__name__})"
                    if is_write or retry_count >= config.max_retries:
                        raise TransientJobError(reason) from None
                    wait_s = backoff_s(retry_count, config.retry_base_s)
                    _log.warning("github.retry", endpoint=endpoint, error=type(exc).__name__,
                                 wait_s=wait_s, retry=retry_count + 1)  # fmt: skip
                    retry_count += 1
                    await self._throttle.sleep(wait_s)
                    continue
                self._observe(endpoint, installation_id, response, started)
            status = response.status_code
            if status < 400:
                return response
            message = _message_of(response)
            if status == 401 and token is not None:
                now = self._clock()
                if token.is_fresh(now) and replication_retries < config.max_retries:
                    replication_retries += 1
                    await self._throttle.sleep(replication_retries * config.retry_base_s)
                    continue
                if not token_renewed:
                    # A cached token can be revoked or expire early: one retry with a new one.
                    token_renewed = True
                    self._tokens.invalidate(token.installation_id, token)
                    continue
            if status == 401 and auth is _Auth.APP:
                self._jwt.forget()
            plan = plan_retry(
                status,
                response.headers,
                message,
                retry_count=retry_count,
                now_epoch_s=self._clock(),
                retry_base_s=config.retry_base_s,
            )
            if plan is None:
                raise GitHubClientError(
                    f"GitHub {method} {endpoint} answered {status}: {message}", status=status
                )
            allowed = config.max_retries if not (is_write and plan.is_rate_limit) else 1
            _log.warning("github.retry", endpoint=endpoint, status=status, reason=str(plan.reason),
                         wait_s=plan.wait_s, retry=retry_count + 1,
                         installation_id=installation_id)  # fmt: skip
            if plan.is_rate_limit:
                self._throttle.block(installation_id, plan.wait_s)
                if retry_count >= allowed or plan.wait_s > config.max_inline_wait_s:
                    raise GitHubRateLimited(
                        f"GitHub {method} {endpoint} rate limited ({plan.reason}): "
                        f"retry in {plan.wait_s:.1f} s",
                        retry_after_s=plan.wait_s,
                    )
            else:
                if retry_count >= allowed or plan.wait_s > config.max_inline_wait_s:
                    raise GitHubServerError(
                        f"GitHub {method} {endpoint} answered {status} "
                        f"after {retry_count + 1} attempts: {message}"
                    )
                await self._throttle.sleep(plan.wait_s)
            retry_count += 1

    async def _download_blob(
        self, location: str, artifact_id: int, sink: BinaryIO, *, max_bytes: int
    ) -> int | None:
        """Stream the signed blob URL into `sink`; None when the URL was refused (expired).

        A download cut short (a dropped connection, a stall past the read timeout) is tried
        again from the start, `sink` rewound to where it began."""
        config = self._config
        retry_count = 0
        start = sink.tell()
        while True:
            started = time.perf_counter()
            written = 0
            try:
                # A bare request: no Authorization, no GitHub headers, for another origin.
                async with self._http.stream("GET", location) as response:
                    status = response.status_code
                    if status == 200:
                        declared = response.headers.get("content-length")
                        if (
                            declared is not None
                            and declared.isdigit()
                            and int(declared) > max_bytes
                        ):
                            raise PermanentJobError(
                                f"artifact {artifact_id} is {declared} bytes, "
                                f"over the {max_bytes}-byte budget"
                            )
                        async for chunk in response.aiter_bytes(_CHUNK_BYTES):
                            written += len(chunk)
                            if written > max_bytes:
                                raise PermanentJobError(
                                    f"artifact {artifact_id} exceeds the {max_bytes}-byte budget"
                                )
                            sink.write(chunk)
                    else:
                        await response.aread()
            except httpx.TransportError as exc:
                if retry_count >= config.max_retries:
                    raise TransientJobError(
                        f"artifact {artifact_id}: blob download failed ({type(exc).__name__})"
                    ) from None
                if written:
                    sink.seek(start)
                    sink.truncate()
                status = 0
            if self._observer is not None:
                self._observer.on_response("GET blob", status, time.perf_counter() - started)
            if status == 200:
                return written
            if status == 403:
                return None  # signed URL expired (Azure AuthenticationFailed): ask GitHub again
            if status in (404, 410):
                raise ArtifactExpired(f"artifact {artifact_id}: blob is gone ({status})")
            if status and status < 500:
                raise GitHubClientError(
                    f"artifact {artifact_id}: blob host answered {status}", status=status
                )
            wait_s = backoff_s(retry_count, config.retry_base_s)
            if retry_count >= config.max_retries or wait_s > config.max_inline_wait_s:
                raise GitHubServerError(f"artifact {artifact_id}: blob host answered {status}")
            retry_count += 1
            await self._throttle.sleep(wait_s)
