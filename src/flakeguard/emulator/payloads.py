"""JSON bodies shaped like GitHub's: REST responses and webhook payloads.

Every builder returns a dict that validates against the shared OpenAPI subset
(`github-openapi/rest-subset.json`, `webhooks-subset.json`); tests/integration/
test_emulator_openapi.py checks that for every endpoint and webhook the emulator serves.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from flakeguard.emulator.scenario import AppSpec, ArtifactSpec, InstallationSpec, RepoSpec, RunSpec

JsonObject = dict[str, Any]

_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
_APP_PERMISSIONS = {"actions": "read", "checks": "write", "metadata": "read"}
_APP_EVENTS = ["check_run", "workflow_run"]


def iso(moment: datetime) -> str:
    """UTC `YYYY-MM-DDTHH:MM:SSZ`, GitHub's timestamp form."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_id(kind: str, ident: int) -> str:
    return base64.b64encode(f"0{len(kind)}:{kind}{ident}".encode()).decode("ascii")


def user(login: str, ident: int, api_url: str, *, kind: str = "User") -> JsonObject:
    """A `simple-user`."""
    base = f"{api_url}/users/{login}"
    return {
        "login": login,
        "id": ident,
        "node_id": node_id(kind, ident),
        "avatar_url": f"https://avatars.githubusercontent.com/u/{ident}?v=4",
        "gravatar_id": "",
        "url": base,
        "html_url": f"https://github.com/{login}",
        "followers_url": f"{base}/followers",
        "following_url": f"{base}/following{{/other_user}}",
        "gists_url": f"{base}/gists{{/gist_id}}",
        "starred_url": f"{base}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{base}/subscriptions",
        "organizations_url": f"{base}/orgs",
        "repos_url": f"{base}/repos",
        "events_url": f"{base}/events{{/privacy}}",
        "received_events_url": f"{base}/received_events",
        "type": kind,
        "site_admin": False,
    }


def _repo_urls(repo: RepoSpec, api_url: str) -> JsonObject:
    base = f"{api_url}/repos/{repo.full_name}"
    return {
        "url": base,
        "html_url": f"https://github.com/{repo.full_name}",
        "archive_url": f"{base}/{{archive_format}}{{/ref}}",
        "assignees_url": f"{base}/assignees{{/user}}",
        "blobs_url": f"{base}/git/blobs{{/sha}}",
        "branches_url": f"{base}/branches{{/branch}}",
        "collaborators_url": f"{base}/collaborators{{/collaborator}}",
        "comments_url": f"{base}/comments{{/number}}",
        "commits_url": f"{base}/commits{{/sha}}",
        "compare_url": f"{base}/compare/{{base}}...{{head}}",
        "contents_url": f"{base}/contents/{{+path}}",
        "contributors_url": f"{base}/contributors",
        "deployments_url": f"{base}/deployments",
        "downloads_url": f"{base}/downloads",
        "events_url": f"{base}/events",
        "forks_url": f"{base}/forks",
        "git_commits_url": f"{base}/git/commits{{/sha}}",
        "git_refs_url": f"{base}/git/refs{{/sha}}",
        "git_tags_url": f"{base}/git/tags{{/sha}}",
        "hooks_url": f"{base}/hooks",
        "issue_comment_url": f"{base}/issues/comments{{/number}}",
        "issue_events_url": f"{base}/issues/events{{/number}}",
        "issues_url": f"{base}/issues{{/number}}",
        "keys_url": f"{base}/keys{{/key_id}}",
        "labels_url": f"{base}/labels{{/name}}",
        "languages_url": f"{base}/languages",
        "merges_url": f"{base}/merges",
        "milestones_url": f"{base}/milestones{{/number}}",
        "notifications_url": f"{base}/notifications{{?since,all,participating}}",
        "pulls_url": f"{base}/pulls{{/number}}",
        "releases_url": f"{base}/releases{{/id}}",
        "stargazers_url": f"{base}/stargazers",
        "statuses_url": f"{base}/statuses/{{sha}}",
        "subscribers_url": f"{base}/subscribers",
        "subscription_url": f"{base}/subscription",
        "tags_url": f"{base}/tags",
        "teams_url": f"{base}/teams",
        "trees_url": f"{base}/git/trees{{/sha}}",
    }


def minimal_repository(repo: RepoSpec, owner: JsonObject, api_url: str) -> JsonObject:
    """A `minimal-repository` (embedded in workflow runs)."""
    return {
        "id": repo.id,
        "node_id": node_id("Repository", repo.id),
        "name": repo.name,
        "full_name": repo.full_name,
        "owner": owner,
        "private": repo.private,
        "description": None,
        "fork": False,
        **_repo_urls(repo, api_url),
    }


def repository(repo: RepoSpec, owner: JsonObject, api_url: str) -> JsonObject:
    """A full `repository` (installation repositories, webhook `repository`)."""
    stamp = iso(_EPOCH)
    return {
        **minimal_repository(repo, owner, api_url),
        "clone_url": f"https://github.com/{repo.full_name}.git",
        "git_url": f"git://github.com/{repo.full_name}.git",
        "ssh_url": f"git@github.com:{repo.full_name}.git",
        "svn_url": f"https://github.com/{repo.full_name}",
        "mirror_url": None,
        "homepage": None,
        "language": None,
        "default_branch": repo.default_branch,
        "forks": 0,
        "forks_count": 0,
        "stargazers_count": 0,
        "watchers": 0,
        "watchers_count": 0,
        "size": 1,
        "open_issues": 0,
        "open_issues_count": 0,
        "has_issues": True,
        "has_projects": True,
        "has_wiki": True,
        "has_pages": False,
        "has_downloads": True,
        "archived": False,
        "disabled": False,
        "visibility": "private" if repo.private else "public",
        "license": None,
        "pushed_at": stamp,
        "created_at": stamp,
        "updated_at": stamp,
    }


def integration(app: AppSpec, api_url: str) -> JsonObject:
    """The app itself (`integration`)."""
    stamp = iso(_EPOCH)
    return {
        "id": app.id,
        "slug": app.slug,
        "client_id": app.client_id,
        "node_id": node_id("Integration", app.id),
        "owner": user(app.owner_login, 9_000_000 + app.id, api_url, kind="Organization"),
        "name": app.name,
        "description": "Flaky-test detection (emulated)",
        "external_url": "https://flakeguard.invalid",
        "html_url": f"https://github.com/apps/{app.slug}",
        "created_at": stamp,
        "updated_at": stamp,
        "permissions": dict(_APP_PERMISSIONS),
        "events": list(_APP_EVENTS),
    }


def installation(app: AppSpec, spec: InstallationSpec, api_url: str) -> JsonObject:
    stamp = iso(_EPOCH)
    account_id = spec.account_id or 1_000_000 + spec.id
    return {
        "id": spec.id,
        "client_id": app.client_id,
        # The subset's inline schema for GET /app/installations is allOf [simple-user,
        # enterprise] (the description's anyOf, flattened), so the account carries both.
        "account": {
            **user(spec.account_login, account_id, api_url, kind=spec.account_type),
            "name": spec.account_login,
            "slug": spec.account_login,
            "created_at": stamp,
            "updated_at": stamp,
        },
        "repository_selection": "selected",
        "access_tokens_url": f"{api_url}/app/installations/{spec.id}/access_tokens",
        "repositories_url": f"{api_url}/installation/repositories",
        "html_url": f"https://github.com/organizations/{spec.account_login}/settings/installations/{spec.id}",
        "app_id": app.id,
        "app_slug": app.slug,
        "target_id": account_id,
        "target_type": spec.account_type,
        "permissions": dict(_APP_PERMISSIONS),
        "events": list(_APP_EVENTS),
        "created_at": stamp,
        "updated_at": stamp,
        "single_file_name": None,
        "has_multiple_single_files": False,
        "single_file_paths": [],
        "suspended_by": None,
        "suspended_at": None,
    }


def installation_token(token: str, expires_at: datetime) -> JsonObject:
    return {
        "token": token,
        "expires_at": iso(expires_at),
        "permissions": dict(_APP_PERMISSIONS),
        "repository_selection": "selected",
    }


def _pull_requests(run: RunSpec, repo: RepoSpec, api_url: str) -> list[JsonObject]:
    repo_ref = {"id": repo.id, "url": f"{api_url}/repos/{repo.full_name}", "name": repo.name}
    return [
        {
            "id": 7_000_000 + number,
            "number": number,
            "url": f"{api_url}/repos/{repo.full_name}/pulls/{number}",
            "head": {"ref": run.head_branch or "", "sha": run.head_sha, "repo": repo_ref},
            "base": {"ref": repo.default_branch, "sha": "0" * 40, "repo": repo_ref},
        }
        for number in run.pr_numbers
    ]


def workflow_run(run: RunSpec, repo: RepoSpec, owner: JsonObject, api_url: str) -> JsonObject:
    """A `workflow-run` for one attempt."""
    base = f"{api_url}/repos/{repo.full_name}/actions/runs/{run.id}"
    updated = run.updated_at or run.created_at
    started = run.run_started_at or run.created_at
    actor = {k: owner[k] for k in owner}
    minimal = minimal_repository(repo, owner, api_url)
    return {
        "id": run.id,
        "name": run.workflow_name,
        "node_id": node_id("WorkflowRun", run.id),
        "check_suite_id": run.id * 10 + run.attempt,
        "check_suite_node_id": node_id("CheckSuite", run.id * 10 + run.attempt),
        "head_branch": run.head_branch,
        "head_sha": run.head_sha,
        "path": run.workflow_path,
        "display_title": f"{run.workflow_name} #{run.run_number}",
        "run_number": run.run_number,
        "run_attempt": run.attempt,
        "event": run.event,
        "status": run.status,
        "conclusion": run.conclusion,
        "workflow_id": run.workflow_id,
        "url": base,
        "html_url": f"https://github.com/{repo.full_name}/actions/runs/{run.id}",
        "pull_requests": _pull_requests(run, repo, api_url),
        "created_at": iso(run.created_at),
        "updated_at": iso(updated),
        "run_started_at": iso(started),
        "actor": actor,
        "triggering_actor": actor,
        "jobs_url": f"{base}/jobs",
        "logs_url": f"{base}/logs",
        "check_suite_url": f"{api_url}/repos/{repo.full_name}/check-suites/{run.id * 10}",
        "artifacts_url": f"{base}/artifacts",
        "cancel_url": f"{base}/cancel",
        "rerun_url": f"{base}/rerun",
        "previous_attempt_url": (f"{base}/attempts/{run.attempt - 1}" if run.attempt > 1 else None),
        "workflow_url": f"{api_url}/repos/{repo.full_name}/actions/workflows/{run.workflow_id}",
        "head_commit": {
            "id": run.head_sha,
            "tree_id": run.head_sha[::-1],
            "message": f"Commit {run.head_sha[:7]}",
            "timestamp": iso(run.created_at),
            "author": {"name": "Octo Cat", "email": "octocat@example.com"},
            "committer": {"name": "GitHub", "email": "noreply@github.com"},
        },
        "repository": minimal,
        "head_repository": minimal,
    }


def artifact(
    spec: ArtifactSpec,
    run: RunSpec,
    repo: RepoSpec,
    api_url: str,
    *,
    size_in_bytes: int,
    sha256_hex: str | None,
    expires_at: datetime,
) -> JsonObject:
    base = f"{api_url}/repos/{repo.full_name}/actions/artifacts/{spec.id}"
    created = spec.created_at or run.created_at
    body: JsonObject = {
        "id": spec.id,
        "node_id": node_id("Artifact", spec.id),
        "name": spec.name,
        "size_in_bytes": size_in_bytes,
        "url": base,
        "archive_download_url": f"{base}/zip",
        "expired": spec.expired,
        "created_at": iso(created),
        "updated_at": iso(created),
        "expires_at": iso(expires_at),
        "workflow_run": {
            "id": run.id,
            "repository_id": repo.id,
            "head_repository_id": repo.id,
            "head_branch": run.head_branch or "",
            "head_sha": run.head_sha,
        },
    }
    if sha256_hex is not None:
        body["digest"] = f"sha256:{sha256_hex}"
    return body


def check_run(record: Any, repo: RepoSpec, app_json: JsonObject, api_url: str) -> JsonObject:
    """A `check-run` from the emulator's stored record (see state.CheckRunRecord)."""
    base = f"{api_url}/repos/{repo.full_name}/check-runs/{record.id}"
    return {
        "id": record.id,
        "node_id": node_id("CheckRun", record.id),
        "head_sha": record.head_sha,
        "external_id": record.external_id or "",
        "url": base,
        "html_url": f"https://github.com/{repo.full_name}/runs/{record.id}",
        "details_url": record.details_url
        or f"https://github.com/{repo.full_name}/runs/{record.id}",
        "status": record.status,
        "conclusion": record.conclusion,
        "started_at": iso(record.started_at),
        "completed_at": iso(record.completed_at) if record.completed_at else None,
        "output": {
            "title": record.title,
            "summary": record.summary,
            "text": record.text,
            "annotations_count": len(record.annotations),
            "annotations_url": f"{base}/annotations",
        },
        "name": record.name,
        "check_suite": {"id": record.check_suite_id},
        "app": app_json,
        "pull_requests": [],
    }


def check_annotation(annotation: JsonObject, repo: RepoSpec, head_sha: str) -> JsonObject:
    return {
        "path": annotation["path"],
        "blob_href": f"https://github.com/{repo.full_name}/blob/{head_sha}/{annotation['path']}",
        "start_line": annotation["start_line"],
        "end_line": annotation["end_line"],
        "start_column": annotation.get("start_column"),
        "end_column": annotation.get("end_column"),
        "annotation_level": annotation["annotation_level"],
        "title": annotation.get("title"),
        "message": annotation["message"],
        "raw_details": annotation.get("raw_details"),
    }


def basic_error(message: str, status: int) -> JsonObject:
    return {
        "message": message,
        "documentation_url": "https://docs.github.com/rest",
        "status": str(status),
    }


# ---- webhooks ----------------------------------------------------------------------------------


def _simple_installation(installation_id: int) -> JsonObject:
    return {"id": installation_id, "node_id": node_id("Installation", installation_id)}


def _sender(api_url: str) -> JsonObject:
    return user("octocat", 583231, api_url)


def workflow_run_event(
    run: RunSpec, repo: RepoSpec, owner: JsonObject, api_url: str, *, action: str = "completed"
) -> JsonObject:
    """A `workflow_run` webhook payload (`requested`, `in_progress` or `completed`)."""
    run_json = workflow_run(run, repo, owner, api_url)
    if action != "completed":
        run_json["status"] = "in_progress" if action == "in_progress" else "requested"
        run_json["conclusion"] = None
    stamp = iso(_EPOCH)
    return {
        "action": action,
        "workflow_run": run_json,
        "workflow": {
            "id": run.workflow_id,
            "node_id": node_id("Workflow", run.workflow_id),
            "name": run.workflow_name,
            "path": run.workflow_path,
            "state": "active",
            "created_at": stamp,
            "updated_at": stamp,
            "url": f"{api_url}/repos/{repo.full_name}/actions/workflows/{run.workflow_id}",
            "html_url": f"https://github.com/{repo.full_name}/blob/main/{run.workflow_path}",
            "badge_url": f"https://github.com/{repo.full_name}/workflows/CI/badge.svg",
        },
        "repository": repository(repo, owner, api_url),
        "sender": _sender(api_url),
        "installation": _simple_installation(repo.installation_id),
    }


def check_run_requested_action_event(
    check_run_json: JsonObject,
    repo: RepoSpec,
    owner: JsonObject,
    api_url: str,
    *,
    identifier: str,
    head_branch: str | None,
) -> JsonObject:
    """A `check_run` `requested_action` payload: a button of our check run was pressed."""
    stamp = iso(_EPOCH)
    check_run_json = dict(check_run_json)
    suite_id = check_run_json["check_suite"]["id"]
    check_run_json["check_suite"] = {
        "id": check_run_json["check_suite"]["id"],
        "node_id": node_id("CheckSuite", check_run_json["check_suite"]["id"]),
        "head_branch": head_branch,
        "head_sha": check_run_json["head_sha"],
        "status": "completed",
        "conclusion": check_run_json["conclusion"],
        "url": f"{api_url}/repos/{repo.full_name}/check-suites/{suite_id}",
        "before": None,
        "after": check_run_json["head_sha"],
        "pull_requests": [],
        "app": check_run_json["app"],
        "repository": minimal_repository(repo, owner, api_url),
        "created_at": stamp,
        "updated_at": stamp,
    }
    return {
        "action": "requested_action",
        "check_run": check_run_json,
        "requested_action": {"identifier": identifier},
        "repository": repository(repo, owner, api_url),
        "sender": _sender(api_url),
        "installation": _simple_installation(repo.installation_id),
    }


def _repo_refs(repos: Sequence[RepoSpec]) -> list[JsonObject]:
    return [
        {
            "id": r.id,
            "node_id": node_id("Repository", r.id),
            "name": r.name,
            "full_name": r.full_name,
            "private": r.private,
        }
        for r in repos
    ]


def installation_event(
    app: AppSpec,
    spec: InstallationSpec,
    repos: Sequence[RepoSpec],
    api_url: str,
    *,
    action: str = "created",
) -> JsonObject:
    """An `installation` payload (`created` or `deleted`)."""
    return {
        "action": action,
        "installation": installation(app, spec, api_url),
        "repositories": _repo_refs(repos),
        "requester": None,
        "sender": _sender(api_url),
    }


def installation_repositories_event(
    app: AppSpec,
    spec: InstallationSpec,
    api_url: str,
    *,
    added: Sequence[RepoSpec] = (),
    removed: Sequence[RepoSpec] = (),
) -> JsonObject:
    """An `installation_repositories` payload: `added` when `added` is non-empty, else `removed`."""
    return {
        "action": "added" if added else "removed",
        "installation": installation(app, spec, api_url),
        "repository_selection": "selected",
        "repositories_added": _repo_refs(added),
        "repositories_removed": _repo_refs(removed),
        "requester": None,
        "sender": _sender(api_url),
    }


def ping_event(app: AppSpec, hook_id: int, url: str) -> JsonObject:
    stamp = iso(_EPOCH)
    return {
        "zen": "Keep it logically awesome.",
        "hook_id": hook_id,
        "hook": {
            "id": hook_id,
            "type": "App",
            "name": "web",
            "active": True,
            "events": list(_APP_EVENTS),
            "config": {"content_type": "json", "insecure_ssl": "0", "url": url},
            "created_at": stamp,
            "updated_at": stamp,
            "app_id": app.id,
        },
    }
