"""App JWT claims and caching; installation-token cache refresh and single flight."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from flakeguard.adapters.github.auth import AppJwtSigner, InstallationToken, InstallationTokenCache
from flakeguard.emulator import generated_private_key_pem

NOW = 1_800_000_000.0


@dataclass
class Clock:
    now_s: float = NOW

    def __call__(self) -> float:
        return self.now_s


def _public_pem(private_pem: str) -> bytes:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_jwt_claims_follow_githubs_rules() -> None:
    clock = Clock()
    pem = generated_private_key_pem()
    token = AppJwtSigner("4242", pem, clock=clock).jwt()
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = jwt.decode(
        token,
        _public_pem(pem),
        algorithms=["RS256"],
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["iss"] == "4242"
    assert claims["iat"] == int(NOW) - 60
    assert claims["exp"] - claims["iat"] == 600
    assert claims["exp"] <= NOW + 600


def test_jwt_is_cached_for_eight_minutes() -> None:
    clock = Clock()
    signer = AppJwtSigner("4242", generated_private_key_pem(), clock=clock)
    first = signer.jwt()
    clock.now_s += 479
    assert signer.jwt() == first
    clock.now_s += 2
    assert signer.jwt() != first
    assert "PRIVATE" not in repr(signer)


def test_bad_key_error_does_not_echo_the_key() -> None:
    signer = AppJwtSigner(
        "1", "-----BEGIN RSA PRIVATE KEY-----\nsecretstuff\n-----END", clock=Clock()
    )
    with pytest.raises(ValueError, match="not a valid RSA PEM key") as caught:
        signer.jwt()
    assert "secretstuff" not in str(caught.value)
    assert caught.value.__cause__ is None


def _token(installation_id: int, value: str, ttl_s: float, clock: Clock) -> InstallationToken:
    return InstallationToken(installation_id, value, clock() + ttl_s, clock())


async def test_token_cache_refreshes_five_minutes_before_expiry() -> None:
    clock = Clock()
    cache = InstallationTokenCache(clock=clock)
    minted: list[str] = []

    async def mint(installation_id: int) -> InstallationToken:
        minted.append(f"ghs_{len(minted)}")
        return _token(installation_id, minted[-1], 3600, clock)

    assert (await cache.get(1, mint)).token == "ghs_0"
    clock.now_s += 3600 - 301
    assert (await cache.get(1, mint)).token == "ghs_0"
    clock.now_s += 2
    assert (await cache.get(1, mint)).token == "ghs_1"
    assert "ghs_" not in repr(cache)
    assert "ghs_" not in repr(cache.peek(1))


async def test_token_minting_is_single_flight_per_installation() -> None:
    clock = Clock()
    cache = InstallationTokenCache(clock=clock)
    calls: list[int] = []
    gate = asyncio.Event()

    async def mint(installation_id: int) -> InstallationToken:
        calls.append(installation_id)
        await gate.wait()
        return _token(installation_id, f"ghs_{installation_id}", 3600, clock)

    tasks = [asyncio.create_task(cache.get(i, mint)) for i in (1, 1, 1, 2)]
    await asyncio.sleep(0)
    gate.set()
    tokens = await asyncio.gather(*tasks)
    assert sorted(calls) == [1, 2]
    assert [t.token for t in tokens] == ["ghs_1", "ghs_1", "ghs_1", "ghs_2"]


async def test_invalidate_drops_only_the_rejected_token() -> None:
    clock = Clock()
    cache = InstallationTokenCache(clock=clock)

    async def mint(installation_id: int) -> InstallationToken:
        return _token(installation_id, "ghs_new", 3600, clock)

    stale = _token(1, "ghs_stale", 3600, clock)
    current = await cache.get(1, mint)
    cache.invalidate(1, stale)
    assert cache.peek(1) is current
    cache.invalidate(1, current)
    assert cache.peek(1) is None
    assert current.is_fresh(clock())
    clock.now_s += 6
    assert not current.is_fresh(clock())
