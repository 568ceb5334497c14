"""GitHub App authentication: the App JWT and per-installation access tokens.

Contract:
- `AppJwtSigner.jwt()` returns an RS256 JWT with `iat = now - 60 s` (clock drift allowance) and
  `exp = iat + 600 s` (GitHub's maximum, i.e. 9 min ahead of now). It is cached and re-signed
  once it is `jwt_reuse_s` (8 min) old, so a cached JWT always has >= 1 min left.
- `InstallationTokenCache.get(installation_id, mint)` returns a cached installation token, or calls
  `mint(installation_id)` when there is none or the cached one expires within `refresh_margin_s`
  (5 min). Minting is single-flight per installation: concurrent callers wait for one request.
- Secrets (the private key, JWTs, tokens) never appear in a repr, log or exception message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import jwt

Clock = Callable[[], float]
"""Seconds since the epoch (`time.time`); injectable so tests can move time."""

JWT_BACKDATE_S = 60
"""GitHub's docs: set `iat` 60 s in the past to allow for clock drift."""

JWT_LIFETIME_S = 600
"""GitHub rejects a JWT whose `exp` is more than 10 minutes after `iat`."""

JWT_REUSE_S = 480
"""Re-sign after 8 minutes (githubkit's choice): the cached JWT keeps >= 1 min of validity."""

TOKEN_REFRESH_MARGIN_S = 300
"""Refresh a token 5 minutes before `expires_at`: a job never starts with a dying token."""

TOKEN_REPLICATION_WINDOW_S = 5.0
"""octokit/auth-app retries a 401 seen within 5 s of token creation (replication delay)."""


@dataclass(frozen=True, slots=True)
class InstallationToken:
    """One installation access token. `token` is secret and kept out of the repr."""

    installation_id: int
    token: str = field(repr=False)
    expires_at_epoch_s: float
    created_at_epoch_s: float

    def is_fresh(self, now_epoch_s: float) -> bool:
        """True within the replication window right after creation (a 401 then is retried)."""
        return now_epoch_s - self.created_at_epoch_s <= TOKEN_REPLICATION_WINDOW_S

    def needs_refresh(self, now_epoch_s: float, margin_s: float) -> bool:
        return now_epoch_s >= self.expires_at_epoch_s - margin_s


class AppJwtSigner:
    """Signs and caches the App JWT (RS256). `iss` is the app id (or the client id)."""

    __slots__ = ("_cached", "_clock", "_issuer", "_private_key_pem", "_reuse_s")

    def __init__(
        self,
        issuer: str,
        private_key_pem: str,
        *,
        clock: Clock = time.time,
        reuse_s: float = JWT_REUSE_S,
    ) -> None:
        self._issuer = issuer
        self._private_key_pem = private_key_pem
        self._clock = clock
        self._reuse_s = reuse_s
        self._cached: tuple[float, str] | None = None

    def __repr__(self) -> str:
        return f"AppJwtSigner(issuer={self._issuer!r})"

    def jwt(self) -> str:
        """A JWT valid now; re-signed when the cached one is `reuse_s` old."""
        now = self._clock()
        if self._cached is not None and now - self._cached[0] < self._reuse_s:
            return self._cached[1]
        issued_at = int(now) - JWT_BACKDATE_S
        claims = {"iat": issued_at, "exp": issued_at + JWT_LIFETIME_S, "iss": self._issuer}
        try:
            token = jwt.encode(claims, self._private_key_pem, algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError):
            # The library's message can quote key material: replace it.
            raise ValueError("GitHub App private key is not a valid RSA PEM key") from None
        self._cached = (now, token)
        return token

    def forget(self) -> None:
        """Drop the cached JWT (after GitHub rejected it, e.g. because of clock skew)."""
        self._cached = None


MintToken = Callable[[int], Awaitable[InstallationToken]]


class InstallationTokenCache:
    """Installation tokens per installation id, refreshed before expiry, single-flight minting."""

    __slots__ = ("_clock", "_locks", "_refresh_margin_s", "_tokens")

    def __init__(
        self, *, clock: Clock = time.time, refresh_margin_s: float = TOKEN_REFRESH_MARGIN_S
    ) -> None:
        self._clock = clock
        self._refresh_margin_s = refresh_margin_s
        self._tokens: dict[int, InstallationToken] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"InstallationTokenCache(installations={sorted(self._tokens)})"

    async def get(self, installation_id: int, mint: MintToken) -> InstallationToken:
        """The cached token, or a new one from `mint` when missing or expiring within the margin."""
        cached = self._tokens.get(installation_id)
        if cached is not None and not cached.needs_refresh(self._clock(), self._refresh_margin_s):
            return cached
        lock = self._locks.setdefault(installation_id, asyncio.Lock())
        async with lock:
            # Another task may have minted while this one waited for the lock.
            cached = self._tokens.get(installation_id)
            if cached is not None and not cached.needs_refresh(
                self._clock(), self._refresh_margin_s
            ):
                return cached
            fresh = await mint(installation_id)
            self._tokens[installation_id] = fresh
            return fresh

    def invalidate(self, installation_id: int, token: InstallationToken) -> None:
        """Forget `token` if it is still the cached one (GitHub answered 401 for it)."""
        if self._tokens.get(installation_id) is token:
            del self._tokens[installation_id]

    def peek(self, installation_id: int) -> InstallationToken | None:
        return self._tokens.get(installation_id)
