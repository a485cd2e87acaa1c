"""Token verification details that need no FHIR server (II.1: personal credentials)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from devtools import tokens
from gateway.app import create_app
from gateway.auth import TokenVerifier, claim
from gateway.config import Settings
from gateway.errors import GatewayError
from tests.conftest import AUDIENCE, ISSUER, UNREACHABLE, read_audit


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


async def test_two_authorization_headers_are_refused_and_audited(
    aiohttp_client: Any, make_settings: Any, idp: Any
) -> None:
    """A proxy in front may have checked the other header than the one the gateway would read (II.1)."""
    from multidict import CIMultiDict

    settings = make_settings(UNREACHABLE)
    client = await aiohttp_client(create_app(settings))
    for path in ("/fhir/Patient/p1", "/admin/audit"):
        headers = CIMultiDict(
            [("Authorization", f"Bearer {idp.token('security_officer')}"), ("Authorization", "Bearer x")]
        )
        resp = await client.get(path, headers=headers)
        assert resp.status == 400, path
        body = await resp.json(content_type=None)
        assert body["issue"][0]["details"]["coding"][0]["code"] == "auth.several-credentials"
        assert read_audit(settings)[-1]["request_id"] == resp.headers["X-Request-Id"]


async def test_credentials_in_the_query_are_never_recorded(
    aiohttp_client: Any, make_settings: Any, idp: Any
) -> None:
    settings = make_settings(UNREACHABLE)
    client = await aiohttp_client(create_app(settings))
    token = idp.token("nurse")
    resp = await client.get(f"/fhir/Patient?access_token={token}&name=x&client_secret=s3cr3t&code=c0de")
    assert resp.status == 401
    raw = json.dumps(read_audit(settings)[-1])
    assert token not in raw and "s3cr3t" not in raw and "c0de" not in raw
    assert "access_token=[redacted]" in raw and "name=x" in raw


@pytest.mark.parametrize("roles", ["nurse physician", "records_officer", {"nurse": True}, ["nurse", 7]])
async def test_roles_of_another_shape_than_an_array_are_refused(pem_verifier, roles: Any) -> None:
    """II.1: a string split on spaces could grant a role nobody granted; only the configured form."""
    verifier, key = pem_verifier
    token = tokens.mint(
        key,
        kid="hospital-idp",
        issuer="iss",
        audience="aud",
        sub="u",
        roles=[],
        extra={"realm_access": {"roles": roles}},
    )
    with pytest.raises(GatewayError) as err:
        await verifier.verify(f"Bearer {token}")
    assert err.value.status == 401 and err.value.reasons[0].rule == "auth.roles-format"


async def test_space_separated_roles_when_the_identity_provider_sends_them(tmp_path: Path) -> None:
    key = tokens.generate_key()
    pem = tmp_path / "idp.pem"
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
        roles_claim_format="space-separated",
    )
    token = tokens.mint(
        key, kid="idp", issuer="iss", audience="aud", sub="u", roles=[], extra={"roles": "nurse  pharmacist"}
    )
    assert (await TokenVerifier(settings).verify(f"Bearer {token}")).roles == ("nurse", "pharmacist")


async def test_key_rotation_new_kid_fetched_withdrawn_kid_refused(idp: Any) -> None:
    """A new key is fetched when a token names it; a key the identity provider withdrew stops
    verifying within jwks_cache_seconds, also for a token verified with it before (real JWKS over HTTP)."""
    settings = Settings(
        upstream_url="http://fhir",
        jwks_url=idp.url,
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_cache_seconds=0.5,
        jwks_min_refresh_seconds=0.0,
    )
    verifier = TokenVerifier(settings)
    await verifier.start()
    old_jwks = dict(idp.jwks)
    try:
        old = idp.token("nurse", sub="n-rot")
        assert (await verifier.verify(f"Bearer {old}")).id == "n-rot"
        new_key = tokens.generate_key()
        idp.jwks = {"keys": [*old_jwks["keys"], tokens.public_jwk(new_key, "key-2")]}
        fresh = tokens.mint(
            new_key, kid="key-2", issuer=ISSUER, audience=AUDIENCE, sub="n-new", roles=["nurse"]
        )
        assert (await verifier.verify(f"Bearer {fresh}")).id == "n-new"  # unknown kid: fetched
        assert (await verifier.verify(f"Bearer {old}")).id == "n-rot"  # both keys published: cached again
        idp.jwks = {"keys": [tokens.public_jwk(new_key, "key-2")]}  # the old key withdrawn, nothing else
        await asyncio.sleep(0.6)
        with pytest.raises(GatewayError) as err:
            await verifier.verify(f"Bearer {old}")
        assert err.value.status == 401 and err.value.reasons[0].rule == "auth.unknown-key"
        assert (await verifier.verify(f"Bearer {fresh}")).id == "n-new"
    finally:
        idp.jwks = old_jwks
        await verifier.close()
