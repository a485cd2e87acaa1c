"""Development and test tokens: a local RSA key pair and tokens signed with it.

Never for production: production tokens come from the hospital's identity provider (JWKS).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

DEV_KID = "emrguard-dev"


def generate_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ensure_dev_keys(directory: str | Path) -> tuple[Path, Path]:
    """(private, public) PEM files in ``directory``; the public file's stem is the token's kid."""
    d = Path(directory)
    private, public = d / f"{DEV_KID}.key", d / f"{DEV_KID}.pem"
    if not private.exists() or not public.exists():
        d.mkdir(parents=True, exist_ok=True)
        key = generate_key()
        private.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        private.chmod(0o600)
        public.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return private, public


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    """The public half as a JWK for a JWKS document."""
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
    return jwk


def mint(
    private_key: Any,
    *,
    kid: str,
    issuer: str,
    audience: str,
    sub: str,
    roles: list[str],
    dept: str = "",
    name: str = "",
    purpose: str | None = None,
    ttl: int = 3600,
    extra: dict[str, Any] | None = None,
    algorithm: str = "RS256",
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": sub,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
        "roles": roles,
        "dept": dept,
        "name": name or sub,
    }
    if purpose:
        claims["purpose_of_use"] = purpose
    claims.update(extra or {})
    return jwt.encode(claims, private_key, algorithm=algorithm, headers={"kid": kid})


# --- `python -m devtools.tokens`: a token for `make run` ----------------------------------------

ROOT = Path(__file__).resolve().parent.parent
DEV_ISSUER = "https://idp.emrguard.local/dev"
DEV_AUDIENCE = "emrguard"
#: Roles that work in a clinical department; the others (researcher, vendor, officers) have none.
DEPARTMENT_ROLES = frozenset({"physician", "nurse", "resident", "student", "pharmacist"})


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m devtools.tokens",
        description="Mint a token signed by the checkout's development key (never in production).",
    )
    ap.add_argument("--role", action="append", help="role (repeatable), e.g. physician, nurse, student")
    ap.add_argument("--sub", help="operator id (a personal account, II.1); default dev-<role>-001")
    ap.add_argument("--dept", help="department; default cardiology for clinical roles, none otherwise")
    ap.add_argument("--purpose", help="PurposeOfUse code as a token claim (or send X-Purpose-Of-Use)")
    ap.add_argument("--ttl", type=int, default=8 * 3600, help="seconds")
    ap.add_argument("--issuer", default=DEV_ISSUER)
    ap.add_argument("--audience", default=DEV_AUDIENCE)
    # The checkout's key, wherever this runs from: a new key would make tokens `make run` refuses.
    ap.add_argument("--key-dir", default=str(ROOT / "var/dev-keys"))
    args = ap.parse_args(argv)
    roles = args.role or ["physician"]
    private, _ = ensure_dev_keys(args.key_dir)
    key = serialization.load_pem_private_key(private.read_bytes(), password=None)
    dept = args.dept if args.dept is not None else ("cardiology" if DEPARTMENT_ROLES & set(roles) else "")
    print(
        mint(
            key,
            kid=DEV_KID,
            issuer=args.issuer,
            audience=args.audience,
            sub=args.sub or f"dev-{roles[0]}-001",
            roles=roles,
            dept=dept,
            purpose=args.purpose,
            ttl=args.ttl,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
