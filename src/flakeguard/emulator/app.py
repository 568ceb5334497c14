"""The emulator's two HTTP applications (raw ASGI, served by uvicorn): the API and the blob host.

API rules (notes/github.md §1-§3, §6 checklist):
- JWT (RS256, `exp - iat <= 600`, `iat` not in the future beyond 60 s skew, `iss` = app id or
  client id) only on `/app*`; installation tokens (`ghs_…`, 1 h, 401 "Bad credentials" when expired
  or revoked, scoped to the installation's repositories) everywhere else.
- `x-ratelimit-*` on every response; a budget at 0 answers 403 "API rate limit exceeded" until its
  reset; GETs carry a weak `ETag` and `If-None-Match` answers 304 without using the budget.
- `per_page` is clamped to 100, `Link` headers are absolute (runs listings link to the numeric
  `/repositories/{id}/…` form, as GitHub does).
- Artifact downloads answer 302 to a signed blob URL (valid 60 s) on another origin, or 410.
Blob host: any `Authorization` header → 400 `InvalidAuthenticationInfo` (Azure's XML); an expired
or forged signature → 403 `AuthenticationFailed`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import operator
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from flakeguard.emulator import payloads
from flakeguard.emulator.faults import Fault, FaultKind, FaultTarget
from flakeguard.emulator.scenario import RepoSpec, RunSpec
from flakeguard.emulator.state import (
    ARTIFACT_RETENTION_S,
    AuthKind,
    CheckRunRecord,
    EmulatorState,
    RequestRecord,
)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

API_VERSIONS = frozenset({"2022-11-28", "2026-03-10"})
DEFAULT_API_VERSION = "2022-11-28"
JWT_MAX_LIFETIME_S = 600
JWT_SKEW_S = 60
BLOB_URL_LIFETIME_S = 60
MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 30
FILTERED_RESULTS_CAP = 1000
MAX_OUTPUT_CHARS = 65_535
MAX_ANNOTATIONS = 50
DOCS_URL = "https://docs.github.com/rest"
_UNAUTHENTICATED_BUCKET = 0
_CHECK_RUN_STATUSES = frozenset({"queued", "in_progress", "completed"})
_CHECK_RUN_CONCLUSIONS = frozenset(
    {"action_required", "cancelled", "failure", "neutral", "success", "skipped", "timed_out"}
)
_ANNOTATION_LEVELS = frozenset({"notice", "warning", "failure"})
_ANNOTATION_REQUIRED = ("path", "start_line", "end_line", "annotation_level", "message")


class HttpError(Exception):
    """Answer with a GitHub error body (`message`, `documentation_url`)."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: Iterable[tuple[str, str]] = (),
        *,
        consumes_budget: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)
        self.consumes_budget = consumes_budget


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


def _json_reply(status: int, data: Any, headers: Iterable[tuple[str, str]] = ()) -> Reply:
    body = json.dumps(data, separators=(",", ":")).encode("utf-8")
    return Reply(status, body, [("content-type", "application/json; charset=utf-8"), *headers])


def _error_reply(error: HttpError) -> Reply:
    return _json_reply(
        error.status, payloads.basic_error(error.message, error.status), error.headers
    )


@dataclass(slots=True)
class Call:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    params: dict[str, str]
    auth: AuthKind = AuthKind.NONE
    installation_id: int | None = None
    token: str | None = None

    def json_body(self) -> dict[str, Any]:
        if not self.body:
            return {}
        try:
            data = json.loads(self.body)
        except ValueError:
            raise HttpError(400, "Problems parsing JSON") from None
        if not isinstance(data, dict):
            raise HttpError(400, "Body should be a JSON object")
        return data


async def _read_body(receive: Receive) -> bytes:
    """The whole request body: unread bytes would corrupt the next keep-alive request."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send_reply(send: Send, reply: Reply) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
    headers.append((b"content-length", str(len(reply.body)).encode("ascii")))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


def _headers_of(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _host_of(headers: dict[str, str]) -> str:
    return headers.get("host", "")


Handler = Callable[["ApiApp", Call], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    auth: AuthKind | None
    """JWT or TOKEN: that credential is required; None: any credential (or none)."""
    handler: Handler
    counts: bool = True


_ROUTES: list[Route] = []


def route(
    method: str, path: str, auth: AuthKind | None, *, counts: bool = True
) -> Callable[[Handler], Handler]:
    pattern = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$")

    def register(handler: Handler) -> Handler:
        _ROUTES.append(Route(method, pattern, auth, handler, counts))
        return handler

    return register


def _int_param(call: Call, name: str) -> int:
    try:
        return int(call.params[name])
    except ValueError:
        raise HttpError(404, "Not Found") from None


def _page_params(call: Call) -> tuple[int, int]:
    try:
        per_page = int(call.query.get("per_page", DEFAULT_PER_PAGE))
        page = int(call.query.get("page", 1))
    except ValueError:
        raise HttpError(422, "Invalid request.\n\nper_page and page must be integers.") from None
    return min(max(per_page, 1), MAX_PER_PAGE), max(page, 1)


class ApiApp:
    """The REST API (ASGI)."""

    def __init__(
        self, state: EmulatorState, *, api_url: str, blob_url: str, public_key: RSAPublicKey
    ) -> None:
        self.state = state
        self.api_url = api_url
        self.blob_url = blob_url
        self._public_key = public_key
        self._blob_secret = secrets.token_bytes(32)
        self._app_json_cache: dict[str, Any] | None = None

    # ---- ASGI entry --------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        headers = _headers_of(scope)
        method = scope["method"]
        path = scope["path"]
        raw_query = scope.get("query_string", b"").decode("latin-1")
        call = Call(method, path, dict(parse_qsl(raw_query)), headers, body, {})
        try:
            reply = await self._dispatch(call)
        except HttpError as error:
            reply = _error_reply(error)
            self._rate_headers(call, reply, consume=error.consumes_budget)
        version = headers.get("x-github-api-version", DEFAULT_API_VERSION)
        reply.headers.append(("x-github-api-version-selected", version))
        reply.headers.append(("x-github-request-id", secrets.token_hex(8).upper()))
        self.state.requests.append(
            RequestRecord(
                target=FaultTarget.API,
                host=_host_of(headers),
                method=method,
                path=path,
                query=raw_query,
                status=reply.status,
                has_authorization="authorization" in headers,
                auth_kind=call.auth,
                installation_id=call.installation_id,
                at_epoch_s=self.state.clock(),
            )
        )
        await _send_reply(send, reply)

    async def _dispatch(self, call: Call) -> Reply:
        version = call.headers.get("x-github-api-version", DEFAULT_API_VERSION)
        if version not in API_VERSIONS:
            raise HttpError(400, f"Invalid API version: {version[:32]}")
        fault = self.state.faults.take(FaultTarget.API, call.method, call.path)
        if fault is not None and fault.kind is FaultKind.SLOW:
            await asyncio.sleep(fault.delay_s)
            fault = None
        matched = self._match(call)
        if matched is None:
            raise HttpError(404, "Not Found")
        self._authenticate(call, matched.auth)
        if fault is not None:
            reply = self._fault_reply(call, fault)
            if reply is not None:
                self._rate_headers(call, reply, consume=True)
                return reply
        if matched.counts:
            self._check_budget(call)
        reply = await matched.handler(self, call)
        consume = matched.counts
        if call.method == "GET" and reply.status == 200:
            etag = 'W/"' + hashlib.blake2b(reply.body, digest_size=16).hexdigest() + '"'
            cache = "private, max-age=60, s-maxage=60"
            reply.headers += [("etag", etag), ("cache-control", cache)]
            reply.headers.append(("vary", "Accept, Authorization, Cookie, X-GitHub-OTP"))
            if etag in _etags(call.headers.get("if-none-match")):
                # GitHub: a conditional request answered 304 does not use the primary budget.
                reply = Reply(304, b"", [("etag", etag), ("cache-control", cache)])
                consume = False
        self._rate_headers(call, reply, consume=consume)
        return reply

    def _match(self, call: Call) -> Route | None:
        for candidate in _ROUTES:
            if candidate.method != call.method:
                continue
            found = candidate.pattern.match(call.path)
            if found is not None:
                call.params = found.groupdict()
                return candidate
        return None

    # ---- credentials -------------------------------------------------------------------------

    def _authenticate(self, call: Call, required: AuthKind | None) -> None:
        header = call.headers.get("authorization")
        if header is None:
            if required is None:
                return
            raise HttpError(401, "Requires authentication")
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() not in ("bearer", "token") or not credential:
            raise HttpError(401, "Bad credentials")
        looks_like_jwt = credential.count(".") == 2 and not credential.startswith("ghs_")
        if required is AuthKind.JWT or (required is None and looks_like_jwt):
            if not looks_like_jwt:
                raise HttpError(401, "A JSON web token could not be decoded")
            self._verify_jwt(credential)
            call.auth = AuthKind.JWT
            return
        if looks_like_jwt:
            raise HttpError(403, "Resource not accessible by integration")
        record = self.state.tokens.get(credential)
        now = self.state.clock()
        if record is None or record.revoked or now >= record.expires_at_epoch_s:
            raise HttpError(401, "Bad credentials")
        if now - record.created_at_epoch_s < self.state.token_replication_delay_s:
            raise HttpError(401, "Bad credentials")
        call.auth = AuthKind.TOKEN
        call.installation_id = record.installation_id
        call.token = credential

    def _verify_jwt(self, credential: str) -> None:
        try:
            claims = jwt.decode(
                credential,
                self._public_key,
                algorithms=["RS256"],
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.PyJWTError:
            raise HttpError(401, "A JSON web token could not be decoded") from None
        issued_at = claims.get("iat")
        expires_at = claims.get("exp")
        if not isinstance(issued_at, int) or isinstance(issued_at, bool):
            raise HttpError(
                401,
                "'Issued at' claim ('iat') must be an Integer representing the time that the "
                "assertion was issued",
            )
        if not isinstance(expires_at, int) or isinstance(expires_at, bool):
            raise HttpError(
                401,
                "'Expiration time' claim ('exp') must be a numeric value representing the "
                "future time at which the assertion expires",
            )
        now = self.state.clock()
        if issued_at > now + JWT_SKEW_S:
            raise HttpError(
                401,
                "'Issued at' claim ('iat') must be an Integer representing the time that the "
                "assertion was issued",
            )
        if expires_at - issued_at > JWT_MAX_LIFETIME_S or expires_at > now + JWT_MAX_LIFETIME_S:
            raise HttpError(401, "'Expiration time' claim ('exp') is too far in the future")
        if expires_at <= now:
            raise HttpError(
                401,
                "'Expiration time' claim ('exp') must be a numeric value representing the "
                "future time at which the assertion expires",
            )
        app = self.state.app
        if str(claims.get("iss")) not in (str(app.id), app.client_id):
            raise HttpError(401, "'Issuer' claim ('iss') must be an Integer")

    # ---- rate limits and faults --------------------------------------------------------------

    def _bucket_key(self, call: Call) -> int | None:
        if call.auth is AuthKind.TOKEN:
            return call.installation_id
        if call.auth is AuthKind.JWT:
            return None
        return _UNAUTHENTICATED_BUCKET

    def _check_budget(self, call: Call) -> None:
        key = self._bucket_key(call)
        with self.state.lock:
            bucket = self.state.bucket(key)
            exhausted = bucket.remaining == 0
        if exhausted:
            who = f"installation ID {key}" if call.auth is AuthKind.TOKEN else "this app"
            raise HttpError(403, f"API rate limit exceeded for {who}.", consumes_budget=False)

    def _rate_headers(self, call: Call, reply: Reply, *, consume: bool) -> None:
        key = self._bucket_key(call)
        with self.state.lock:
            bucket = self.state.bucket(key)
            if consume and bucket.remaining > 0:
                bucket.used += 1
            reply.headers += [
                ("x-ratelimit-limit", str(bucket.limit)),
                ("x-ratelimit-remaining", str(bucket.remaining)),
                ("x-ratelimit-used", str(bucket.used)),
                ("x-ratelimit-reset", str(int(bucket.reset_epoch_s))),
                ("x-ratelimit-resource", "core"),
            ]

    def _fault_reply(self, call: Call, fault: Fault) -> Reply | None:
        kind = fault.kind
        if kind is FaultKind.SERVER_ERROR:
            status = fault.status or 502
            return _error_reply(HttpError(status, "Server Error"))
        if kind is FaultKind.RETRY_AFTER:
            status = fault.status or 429
            retry_after = str(round(fault.retry_after_s or 1))
            return _error_reply(
                HttpError(
                    status, "Too many requests, please retry later.", [("retry-after", retry_after)]
                )
            )
        if kind is FaultKind.SECONDARY_LIMIT:
            extra = []
            if fault.retry_after_s is not None:
                extra.append(("retry-after", str(round(fault.retry_after_s))))
            message = (
                "You have exceeded a secondary rate limit. Please wait a few minutes before you "
                "try again."
            )
            return _error_reply(HttpError(fault.status or 403, message, extra))
        if kind is FaultKind.PRIMARY_EXHAUSTED:
            self.state.exhaust(self._bucket_key(call), fault.reset_in_s)
            return None  # the budget check that follows answers 403 until the reset
        if kind is FaultKind.GONE:
            return _error_reply(HttpError(410, "Artifact has expired"))
        if kind is FaultKind.BAD_CREDENTIALS:
            return _error_reply(HttpError(401, "Bad credentials"))
        return None

    # ---- helpers for handlers ----------------------------------------------------------------

    def repo_for(self, call: Call) -> RepoSpec:
        repo = self.state.repos_by_name.get(f"{call.params['owner']}/{call.params['repo']}".lower())
        if repo is None or (
            call.auth is AuthKind.TOKEN and repo.installation_id != call.installation_id
        ):
            raise HttpError(404, "Not Found")
        return repo

    def repo_by_id(self, call: Call) -> RepoSpec:
        repo = self.state.repos.get(_int_param(call, "repo_id"))
        if repo is None or repo.installation_id != call.installation_id:
            raise HttpError(404, "Not Found")
        return repo

    def owner_json(self, repo: RepoSpec) -> dict[str, Any]:
        installation = self.state.owner_of(repo)
        account_id = installation.account_id or 1_000_000 + installation.id
        return payloads.user(
            installation.account_login, account_id, self.api_url, kind=installation.account_type
        )

    def app_json(self) -> dict[str, Any]:
        if self._app_json_cache is None:
            self._app_json_cache = payloads.integration(self.state.app, self.api_url)
        return self._app_json_cache

    def paginate(
        self, call: Call, items: list[Any], link_path: str | None = None
    ) -> tuple[list[Any], list[tuple[str, str]]]:
        """One page of `items` and its absolute `Link` header (none for a single page)."""
        per_page, page = _page_params(call)
        last_page = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        if last_page == 1:
            return chunk, []
        base_query = {k: v for k, v in call.query.items() if k != "page"}
        base_query["per_page"] = str(per_page)
        path = link_path or call.path

        def link(target: int, rel: str) -> str:
            query = urlencode({**base_query, "page": str(target)})
            return f'<{self.api_url}{path}?{query}>; rel="{rel}"'

        links = []
        if page > 1:
            links += [link(page - 1, "prev"), link(1, "first")]
        if page < last_page:
            links += [link(page + 1, "next"), link(last_page, "last")]
        return chunk, [("link", ", ".join(links))] if links else []

    def blob_location(self, artifact_id: int) -> str:
        expires = int(self.state.clock()) + BLOB_URL_LIFETIME_S
        signature = self.sign_blob(artifact_id, expires)
        query = urlencode({"sv": "2021-12-02", "se": str(expires), "sr": "b", "sig": signature})
        return f"{self.blob_url}/actions-results/artifact-{artifact_id}.zip?{query}"

    def sign_blob(self, artifact_id: int, expires: int) -> str:
        message = f"{artifact_id}:{expires}".encode("ascii")
        return hmac.new(self._blob_secret, message, hashlib.sha256).hexdigest()


def _etags(header: str | None) -> set[str]:
    if not header:
        return set()
    return {part.strip() for part in header.split(",")}


# ---- routes: the app and installations -------------------------------------------------------


@route("GET", "/app", AuthKind.JWT)
async def _get_app(api: ApiApp, call: Call) -> Reply:
    return _json_reply(200, {**api.app_json(), "installations_count": len(api.state.installations)})


@route("GET", "/app/installations", AuthKind.JWT)
async def _list_installations(api: ApiApp, call: Call) -> Reply:
    with api.state.lock:
        specs = sorted(api.state.installations.values(), key=lambda i: i.id)
    items = [payloads.installation(api.state.app, s, api.api_url) for s in specs]
    page, links = api.paginate(call, items)
    return _json_reply(200, page, links)


@route("GET", "/app/installations/{installation_id}", AuthKind.JWT)
async def _get_installation(api: ApiApp, call: Call) -> Reply:
    spec = api.state.installations.get(_int_param(call, "installation_id"))
    if spec is None:
        raise HttpError(404, "Not Found")
    return _json_reply(200, payloads.installation(api.state.app, spec, api.api_url))


@route("POST", "/app/installations/{installation_id}/access_tokens", AuthKind.JWT)
async def _create_token(api: ApiApp, call: Call) -> Reply:
    call.json_body()
    installation_id = _int_param(call, "installation_id")
    if installation_id not in api.state.installations:
        raise HttpError(404, "Not Found")
    token, record = api.state.issue_token(installation_id)
    expires_at = datetime.fromtimestamp(record.expires_at_epoch_s, tz=UTC)
    return _json_reply(201, payloads.installation_token(token, expires_at))


@route("GET", "/repos/{owner}/{repo}/installation", AuthKind.JWT)
async def _repo_installation(api: ApiApp, call: Call) -> Reply:
    repo = api.repo_for(call)
    spec = api.state.installations[repo.installation_id]
    return _json_reply(200, payloads.installation(api.state.app, spec, api.api_url))


@route("GET", "/installation/repositories", AuthKind.TOKEN)
async def _installation_repositories(api: ApiApp, call: Call) -> Reply:
    with api.state.lock:
        repos = sorted(
            (r for r in api.state.repos.values() if r.installation_id == call.installation_id),
            key=lambda r: r.id,
        )
    page, links = api.paginate(call, repos)
    items = [payloads.repository(r, api.owner_json(r), api.api_url) for r in page]
    body = {"total_count": len(repos), "repository_selection": "selected", "repositories": items}
    return _json_reply(200, body, links)


@route("DELETE", "/installation/token", AuthKind.TOKEN)
async def _revoke_token(api: ApiApp, call: Call) -> Reply:
    if call.token is not None:
        api.state.revoke_token(call.token)
    return Reply(204)


@route("GET", "/rate_limit", None, counts=False)
async def _rate_limit(api: ApiApp, call: Call) -> Reply:
    key = api._bucket_key(call)
    with api.state.lock:
        bucket = api.state.bucket(key)
        core = {
            "limit": bucket.limit,
            "remaining": bucket.remaining,
            "used": bucket.used,
            "reset": int(bucket.reset_epoch_s),
        }
    reset = int(api.state.clock()) + 60
    search = {"limit": 30, "remaining": 30, "used": 0, "reset": reset}
    graphql = {"limit": 5000, "remaining": 5000, "used": 0, "reset": reset + 3540}
    body: dict[str, Any] = {"resources": {"core": core, "search": search, "graphql": graphql}}
    if call.headers.get("x-github-api-version", DEFAULT_API_VERSION) == DEFAULT_API_VERSION:
        body["rate"] = core
    return _json_reply(200, body)


# ---- routes: workflow runs and artifacts -------------------------------------------------------


def _run_matches(run: RunSpec, query: dict[str, str]) -> bool:
    status = query.get("status")
    if status and status not in (run.status, run.conclusion):
        return False
    if "branch" in query and run.head_branch != query["branch"]:
        return False
    if "event" in query and run.event != query["event"]:
        return False
    if "head_sha" in query and run.head_sha != query["head_sha"]:
        return False
    created = query.get("created")
    return not created or _created_matches(run.created_at, created)


def _parse_when(raw: str, *, end: bool) -> datetime:
    raw = raw.strip()
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise HttpError(422, f"Invalid request.\n\n{raw!r} is not a valid date.") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if end and len(raw) == 10:  # a bare date as the end of a range covers that whole day
        value += timedelta(days=1) - timedelta(microseconds=1)
    return value


_COMPARISONS: tuple[tuple[str, Callable[[datetime, datetime], bool]], ...] = (
    (">=", operator.ge),
    ("<=", operator.le),
    (">", operator.gt),
    ("<", operator.lt),
)


def _created_matches(created_at: datetime, expression: str) -> bool:
    """GitHub's search range syntax: `>=T`, `>T`, `<=T`, `<T`, `A..B`, or a bare date/time."""
    for prefix, compare in _COMPARISONS:
        if expression.startswith(prefix):
            bound = _parse_when(expression[len(prefix) :], end=prefix.startswith("<"))
            return compare(created_at, bound)
    if ".." in expression:
        start, _, stop = expression.partition("..")
        lower_ok = start in ("", "*") or created_at >= _parse_when(start, end=False)
        upper_ok = stop in ("", "*") or created_at <= _parse_when(stop, end=True)
        return lower_ok and upper_ok
    return _parse_when(expression, end=False) <= created_at <= _parse_when(expression, end=True)


_RUN_FILTERS = ("status", "branch", "event", "head_sha", "created", "actor", "check_suite_id")


async def _list_runs_for(api: ApiApp, call: Call, repo: RepoSpec) -> Reply:
    with api.state.lock:
        keys = list(api.state.runs_by_repo.get(repo.id, []))
        runs = [api.state.latest_attempt(repo_id, run_id) for repo_id, run_id in keys]
    selected = [r for r in runs if r is not None and _run_matches(r, call.query)]
    selected.sort(key=lambda r: (r.created_at, r.id), reverse=True)
    if any(f in call.query for f in _RUN_FILTERS):
        selected = selected[:FILTERED_RESULTS_CAP]
    page, links = api.paginate(call, selected, f"/repositories/{repo.id}/actions/runs")
    owner = api.owner_json(repo)
    items = [payloads.workflow_run(r, repo, owner, api.api_url) for r in page]
    return _json_reply(200, {"total_count": len(selected), "workflow_runs": items}, links)


@route("GET", "/repos/{owner}/{repo}/actions/runs", AuthKind.TOKEN)
async def _list_runs(api: ApiApp, call: Call) -> Reply:
    return await _list_runs_for(api, call, api.repo_for(call))


@route("GET", "/repositories/{repo_id}/actions/runs", AuthKind.TOKEN)
async def _list_runs_by_id(api: ApiApp, call: Call) -> Reply:
    return await _list_runs_for(api, call, api.repo_by_id(call))


@route("GET", "/repos/{owner}/{repo}/actions/runs/{run_id}", AuthKind.TOKEN)
async def _get_run(api: ApiApp, call: Call) -> Reply:
    repo = api.repo_for(call)
    run = api.state.latest_attempt(repo.id, _int_param(call, "run_id"))
    if run is None:
        raise HttpError(404, "Not Found")
    return _json_reply(200, payloads.workflow_run(run, repo, api.owner_json(repo), api.api_url))


@route("GET", "/repos/{owner}/{repo}/actions/runs/{run_id}/attempts/{attempt}", AuthKind.TOKEN)
async def _get_run_attempt(api: ApiApp, call: Call) -> Reply:
    repo = api.repo_for(call)
    run_id, attempt = _int_param(call, "run_id"), _int_param(call, "attempt")
    run = api.state.run_attempt(repo.id, run_id, attempt)
    if run is None:
        raise HttpError(404, "Not Found")
    return _json_reply(200, payloads.workflow_run(run, repo, api.owner_json(repo), api.api_url))


def _artifact_json(api: ApiApp, artifact_id: int, repo: RepoSpec) -> dict[str, Any]:
    spec, run = api.state.artifacts[artifact_id]
    blob = api.state.artifacts_store.get(spec.template)
    created = spec.created_at or run.created_at
    return payloads.artifact(
        spec,
        run,
        repo,
        api.api_url,
        size_in_bytes=len(blob.data) if blob else 0,
        sha256_hex=blob.sha256_hex if blob else None,
        expires_at=created + timedelta(seconds=ARTIFACT_RETENTION_S),
    )


@route("GET", "/repos/{owner}/{repo}/actions/runs/{run_id}/artifacts", AuthKind.TOKEN)
async def _list_run_artifacts(api: ApiApp, call: Call) -> Reply:
    repo = api.repo_for(call)
    run_id = _int_param(call, "run_id")
    with api.state.lock:
        attempts = api.state.runs.get((repo.id, run_id))
        if attempts is None:
            raise HttpError(404, "Not Found")
        ids = [a.id for attempt in sorted(attempts) for a in attempts[attempt].artifacts]
    name = call.query.get("name")
    if name is not None:
        ids = [i for i in ids if api.state.artifacts[i][0].name == name]
    if call.query.get("direction", "desc") == "desc":
        ids.reverse()
    page, links = api.paginate(call, ids)
    items = [_artifact_json(api, i, repo) for i in page]
    return _json_reply(200, {"total_count": len(ids), "artifacts": items}, links)


def _artifact_of_repo(api: ApiApp, call: Call, repo: RepoSpec) -> int:
    artifact_id = _int_param(call, "artifact_id")
    found = api.state.artifacts.get(artifact_id)
    if found is None or found[1].repo_id != repo.id:
        raise HttpError(404, "Not Found")
    return artifact_id


@route("GET", "/repos/{owner}/{repo}/actions/artifacts/{artifact_id}", AuthKind.TOKEN)
async def _get_artifact(api: ApiApp, call: Call) -> Reply:
    repo = api.repo_for(call)
    return _json_reply(200, _artifact_json(api, _artifact_of_repo(api, call, repo), repo))


@route(
    "GET", "/repos/{owner}/{repo}/actions/artifacts/{artifact_id}/{archive_format}", AuthKind.TOKEN
)
async def _download_artifact(api: ApiApp, call: Call) -> Reply:
    repo = api.repo_for(call)
    artifact_id = _artifact_of_repo(api, call, repo)
    if call.params["archive_format"] != "zip":
        raise HttpError(404, "Not Found")
    if api.state.artifacts[artifact_id][0].expired:
        raise HttpError(410, "Artifact has expired")
    return Reply(302, b"", [("location", api.blob_location(artifact_id))])


# ---- routes: check runs ----------------------------------------------------------------------


def _too_long(field_name: str, value: Any) -> None:
    if isinstance(value, str) and len(value) > MAX_OUTPUT_CHARS:
        raise HttpError(
            422,
            f"Invalid request.\n\nOnly {MAX_OUTPUT_CHARS} characters are allowed; "
            f"{len(value)} were supplied. ({field_name})",
        )


def _validate_output(output: Any, *, creating: bool) -> None:
    if not isinstance(output, dict):
        raise HttpError(422, "Invalid request.\n\nFor 'properties/output', it is not an object.")
    required = ("title", "summary") if creating else ("summary",)
    for key in required:
        if not isinstance(output.get(key), str):
            raise HttpError(422, f'Invalid request.\n\n"{key}" wasn\'t supplied.')
    _too_long("output.summary", output.get("summary"))
    _too_long("output.text", output.get("text"))
    annotations = output.get("annotations") or []
    if not isinstance(annotations, list) or len(annotations) > MAX_ANNOTATIONS:
        raise HttpError(
            422, f"Invalid request.\n\nOnly {MAX_ANNOTATIONS} annotations are allowed per request."
        )
    for annotation in annotations:
        if not isinstance(annotation, dict) or any(
            k not in annotation for k in _ANNOTATION_REQUIRED
        ):
            raise HttpError(422, "Invalid request.\n\nAn annotation lacks a required field.")
        if annotation["annotation_level"] not in _ANNOTATION_LEVELS:
            raise HttpError(422, "Invalid request.\n\nInvalid annotation_level.")


def _validate_actions(actions: Any) -> None:
    if not isinstance(actions, list) or len(actions) > 3:
        raise HttpError(422, "Invalid request.\n\nOnly 3 actions are allowed.")
    limits = {"label": 20, "identifier": 20, "description": 40}
    for action in actions:
        for key, limit in limits.items():
            value = action.get(key) if isinstance(action, dict) else None
            if not isinstance(value, str) or len(value) > limit:
                raise HttpError(
                    422, f"Invalid request.\n\nactions.{key} must be at most {limit} characters."
                )


def _status_and_conclusion(
    body: dict[str, Any], status: str, conclusion: str | None
) -> tuple[str, str | None]:
    if "status" in body:
        status = body["status"]
        if status not in _CHECK_RUN_STATUSES:
            raise HttpError(422, "Invalid request.\n\nstatus is not a valid value.")
    if "conclusion" in body and body["conclusion"] is not None:
        conclusion = body["conclusion"]
        if conclusion not in _CHECK_RUN_CONCLUSIONS:
            raise HttpError(422, "Invalid request.\n\nconclusion is not a valid value.")
        status = "completed"  # GitHub: providing a conclusion completes the run
    if (status == "completed" or body.get("completed_at")) and conclusion is None:
        raise HttpError(422, "Invalid request.\n\nNo conclusion provided.")
    return status, conclusion


@route("POST", "/repos/{owner}/{repo}/check-runs", AuthKind.TOKEN)
async def _create_check_run(api: ApiApp, call: Call) -> Reply:
    repo = api.repo_for(call)
    body = call.json_body()
    for key in ("name", "head_sha"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise HttpError(422, f'Invalid request.\n\n"{key}" wasn\'t supplied.')
    output = body.get("output")
    if output is not None:
        _validate_output(output, creating=True)
    if "actions" in body:
        _validate_actions(body["actions"])
    status, conclusion = _status_and_conclusion(body, "queued", None)
    now = api.state.now()
    check_run_id = api.state.new_check_run_id()
    suite = api.state.latest_suite_for(repo.id, body["head_sha"])
    record = CheckRunRecord(
        id=check_run_id,
        repo_id=repo.id,
        name=body["name"],
        head_sha=body["head_sha"],
        status=status,
        conclusion=conclusion,
        title=(output or {}).get("title"),
        summary=(output or {}).get("summary"),
        text=(output or {}).get("text"),
        annotations=tuple((output or {}).get("annotations") or ()),
        actions=tuple(body.get("actions") or ()),
        started_at=now,
        completed_at=now if status == "completed" else None,
        external_id=body.get("external_id"),
        details_url=body.get("details_url"),
        check_suite_id=suite,
    )
    api.state.store_new_check_run(record)
    return _json_reply(201, payloads.check_run(record, repo, api.app_json(), api.api_url))


def _check_run_of_repo(api: ApiApp, call: Call, repo: RepoSpec) -> CheckRunRecord:
    record = api.state.check_runs.get(_int_param(call, "check_run_id"))
    if record is None or record.repo_id != repo.id:
        raise HttpError(404, "Not Found")
    return record


@route("GET", "/repos/{owner}/{repo}/check-runs/{check_run_id}", AuthKind.TOKEN)
async def _get_check_run(api: ApiApp, call: Call) -> Reply:
    repo = api.repo_for(call)
    record = _check_run_of_repo(api, call, repo)
    return _json_reply(200, payloads.check_run(record, repo, api.app_json(), api.api_url))


@route("PATCH", "/repos/{owner}/{repo}/check-runs/{check_run_id}", AuthKind.TOKEN)
async def _update_check_run(api: ApiApp, call: Call) -> Reply:
    repo = api.repo_for(call)
    body = call.json_body()
    output = body.get("output")
    if output is not None:
        _validate_output(output, creating=False)
    if "actions" in body:
        _validate_actions(body["actions"])
    if body.get("conclusion") == "stale":
        raise HttpError(422, "Invalid request.\n\nconclusion cannot be changed to stale.")
    with api.state.lock:
        record = _check_run_of_repo(api, call, repo)
        status, conclusion = _status_and_conclusion(body, record.status, record.conclusion)
        changes: dict[str, Any] = {"status": status, "conclusion": conclusion}
        if "name" in body:
            changes["name"] = body["name"]
        if output is not None:
            changes["title"] = output.get("title", record.title)
            changes["summary"] = output["summary"]
            if "text" in output:
                changes["text"] = output["text"]
            # GitHub appends annotations on update.
            changes["annotations"] = record.annotations + tuple(output.get("annotations") or ())
        if "actions" in body:
            changes["actions"] = tuple(body["actions"])
        if status == "completed" and record.completed_at is None:
            changes["completed_at"] = api.state.now()
        record = replace(record, writes=record.writes + 1, **changes)
        api.state.check_runs[record.id] = record
    return _json_reply(200, payloads.check_run(record, repo, api.app_json(), api.api_url))


@route("GET", "/repos/{owner}/{repo}/check-runs/{check_run_id}/annotations", AuthKind.TOKEN)
async def _list_annotations(api: ApiApp, call: Call) -> Reply:
    repo = api.repo_for(call)
    record = _check_run_of_repo(api, call, repo)
    page, links = api.paginate(call, list(record.annotations))
    items = [payloads.check_annotation(a, repo, record.head_sha) for a in page]
    return _json_reply(200, items, links)


@route("GET", "/repos/{owner}/{repo}/commits/{ref}/check-runs", AuthKind.TOKEN)
async def _list_check_runs_for_ref(api: ApiApp, call: Call) -> Reply:
    repo = api.repo_for(call)
    ref = call.params["ref"]
    name = call.query.get("check_name")
    status = call.query.get("status")
    app_id = call.query.get("app_id")
    with api.state.lock:
        ids = api.state.check_runs_by_ref.get((repo.id, ref), [])
        records = [
            r
            for r in (api.state.check_runs[i] for i in ids)
            if (name is None or r.name == name) and (status is None or r.status == status)
        ]
    if app_id is not None and app_id != str(api.state.app.id):
        records = []
    records.sort(key=lambda r: r.id, reverse=True)
    if call.query.get("filter", "latest") == "latest":
        seen: set[str] = set()
        latest = []
        for record in records:
            if record.name not in seen:
                seen.add(record.name)
                latest.append(record)
        records = latest
    page, links = api.paginate(call, records)
    items = [payloads.check_run(r, repo, api.app_json(), api.api_url) for r in page]
    return _json_reply(200, {"total_count": len(records), "check_runs": items}, links)


# ---- the blob host ---------------------------------------------------------------------------

_AZURE_BAD_AUTH = (
    b'<?xml version="1.0" encoding="utf-8"?><Error><Code>InvalidAuthenticationInfo</Code>'
    b"<Message>Authentication information is not given in the correct format. Check the value "
    b"of Authorization header.</Message></Error>"
)
_AZURE_AUTH_FAILED = (
    b'<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthenticationFailed</Code>'
    b"<Message>Server failed to authenticate the request. Make sure the value of Authorization "
    b"header is formed correctly including the signature.</Message>"
    b"<AuthenticationErrorDetail>Signature not valid in the specified time frame"
    b"</AuthenticationErrorDetail></Error>"
)
_AZURE_NOT_FOUND = (
    b'<?xml version="1.0" encoding="utf-8"?><Error><Code>BlobNotFound</Code>'
    b"<Message>The specified blob does not exist.</Message></Error>"
)
_BLOB_PATH = re.compile(r"^/actions-results/artifact-(\d+)\.zip$")


class BlobApp:
    """The artifact blob host (another origin): signed URLs only, no Authorization."""

    def __init__(self, state: EmulatorState, api: ApiApp) -> None:
        self.state = state
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await _read_body(receive)
        headers = _headers_of(scope)
        raw_query = scope.get("query_string", b"").decode("latin-1")
        status, body, slow_s = self._answer(scope["method"], scope["path"], raw_query, headers)
        self.state.requests.append(
            RequestRecord(
                target=FaultTarget.BLOB,
                host=_host_of(headers),
                method=scope["method"],
                path=scope["path"],
                query=raw_query,
                status=status,
                has_authorization="authorization" in headers,
                auth_kind=AuthKind.NONE,
                installation_id=None,
                at_epoch_s=self.state.clock(),
            )
        )
        content_type = b"application/zip" if status == 200 else b"application/xml"
        response_headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"server", b"Windows-Azure-Blob/1.0 Microsoft-HTTPAPI/2.0"),
            (b"x-ms-request-id", secrets.token_hex(16).encode("ascii")),
        ]
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        if slow_s > 0 and len(body) > 1:
            half = len(body) // 2
            await send({"type": "http.response.body", "body": body[:half], "more_body": True})
            await asyncio.sleep(slow_s)
            await send({"type": "http.response.body", "body": body[half:]})
            return
        await send({"type": "http.response.body", "body": body})

    def _answer(
        self, method: str, path: str, raw_query: str, headers: dict[str, str]
    ) -> tuple[int, bytes, float]:
        if "authorization" in headers:
            return 400, _AZURE_BAD_AUTH, 0.0
        slow_s = 0.0
        fault = self.state.faults.take(FaultTarget.BLOB, method, path)
        if fault is not None:
            if fault.kind is FaultKind.SLOW:
                slow_s = fault.delay_s
            elif fault.kind is FaultKind.SERVER_ERROR:
                return fault.status or 503, b"", 0.0
            elif fault.kind is FaultKind.GONE:
                return 404, _AZURE_NOT_FOUND, 0.0
            elif fault.kind is FaultKind.BAD_CREDENTIALS:
                return 403, _AZURE_AUTH_FAILED, 0.0
        found = _BLOB_PATH.match(path)
        if method not in ("GET", "HEAD") or found is None:
            return 404, _AZURE_NOT_FOUND, 0.0
        query = dict(parse_qsl(raw_query))
        artifact_id = int(found.group(1))
        try:
            expires = int(query.get("se", ""))
        except ValueError:
            return 403, _AZURE_AUTH_FAILED, 0.0
        expected = self.api.sign_blob(artifact_id, expires)
        if not hmac.compare_digest(expected, query.get("sig", "")):
            return 403, _AZURE_AUTH_FAILED, 0.0
        if self.state.clock() > expires:
            return 403, _AZURE_AUTH_FAILED, 0.0
        entry = self.state.artifacts.get(artifact_id)
        blob = None if entry is None else self.state.artifacts_store.get(entry[0].template)
        if blob is None:
            return 404, _AZURE_NOT_FOUND, 0.0
        return 200, (b"" if method == "HEAD" else blob.data), slow_s
