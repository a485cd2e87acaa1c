"""Token verification details that need no FHIR server (II.1: personal credentials)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from devtools import tokens
from gateway.auth import TokenVerifier, claim
from gateway.config import Settings
from gateway.errors import GatewayError


@pytest.fixture
def pem_verifier(tmp_path: Path) -> tuple[TokenVerifier, object]:
    key = tokens.generate_key()
    pem = tmp_path / "hospital-idp.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    settings = Settings(
        upstream_url="http://fhir",
        jwt_public_key_files=(str(pem),),
        issuer="iss",
        audience="aud",
        jwt_leeway_seconds=0,
        roles_claim="realm_access.roles",
    )
    return TokenVerifier(settings), key


async def test_pem_key_and_keycloak_roles_claim(pem_verifier) -> None:
    verifier, key = pem_verifier
    token = tokens.mint(
        key,
        kid="hospital-idp",
        issuer="iss",
        audience="aud",
        sub="nurse-7",
        roles=[],
        extra={"realm_access": {"roles": ["nurse"]}},
    )
    operator = await verifier.verify(f"Bearer {token}")
    assert operator.id == "nurse-7" and operator.roles == ("nurse",)


async def test_cached_token_does_not_outlive_its_expiry(pem_verifier) -> None:
    verifier, key = pem_verifier
    token = tokens.mint(
        key, kid="hospital-idp", issuer="iss", audience="aud", sub="u", roles=["nurse"], ttl=1
    )
    assert (await verifier.verify(f"Bearer {token}")).id == "u"
    assert (await verifier.verify(f"Bearer {token}")).id == "u"  # served from the cache
    await asyncio.sleep(1.3)
    with pytest.raises(GatewayError) as err:
        await verifier.verify(f"Bearer {token}")
    assert err.value.status == 401 and err.value.reasons[0].rule == "auth.expired"


async def test_token_without_sub_is_refused(pem_verifier) -> None:
    verifier, key = pem_verifier
    import jwt

    token = jwt.encode(
        {"iss": "iss", "aud": "aud", "exp": 4102444800},
        key,
        algorithm="RS256",
        headers={"kid": "hospital-idp"},
    )
    with pytest.raises(GatewayError) as err:
        await verifier.verify(f"Bearer {token}")
    assert err.value.reasons[0].rule == "auth.missing-claim" and err.value.reasons[0].clause == "II.1"


def test_claim_paths() -> None:
    claims = {"realm_access": {"roles": ["a"]}, "dept": "icu"}
    assert claim(claims, "realm_access.roles") == ["a"]
    assert claim(claims, "dept") == "icu"
    assert claim(claims, "missing.path") is None
