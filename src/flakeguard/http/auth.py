"""Bearer-token authentication of the management API (`ADMIN_API_TOKEN`).

Policy:
- Every route that changes a queue, or returns job payloads, failed reasons or stack traces
  (they can hold repository names, branch names, test output), needs
  `Authorization: Bearer <ADMIN_API_TOKEN>`: missing -> 401 with `WWW-Authenticate: Bearer`,
  wrong -> 403.
- Without `ADMIN_API_TOKEN` configured those routes answer 403 "management API disabled":
  disabled, never open.
- Job counts (`GET /queues`, `GET /queues/{name}/stats`) are open: they tell no more than the
  unauthenticated `/metrics` and `/health` already do.

The comparison is constant-time (`hmac.compare_digest` on bytes) and the token never appears
in a response or a log line.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

DISABLED_DETAIL = "management API disabled: set ADMIN_API_TOKEN"
MISSING_DETAIL = "missing bearer token"
WRONG_DETAIL = "invalid bearer token"

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="`Authorization: Bearer <ADMIN_API_TOKEN>`",
)


def token_matches(presented: str, expected: SecretStr) -> bool:
    """Constant-time comparison; bytes, so non-ASCII input is a mismatch, not a TypeError."""
    return hmac.compare_digest(
        presented.encode("utf-8", "surrogatepass"), expected.get_secret_value().encode("utf-8")
    )


def require_admin(expected: SecretStr | None) -> Callable[..., None]:
    """A FastAPI dependency enforcing the policy above for one configured token (or none)."""
    configured = expected is not None and bool(expected.get_secret_value())

    def check(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if not configured or expected is None:
            raise HTTPException(status.HTTP_403_FORBIDDEN, DISABLED_DETAIL)
        if credentials is None or not credentials.credentials:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                MISSING_DETAIL,
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not token_matches(credentials.credentials, expected):
            raise HTTPException(status.HTTP_403_FORBIDDEN, WRONG_DETAIL)

    return check
