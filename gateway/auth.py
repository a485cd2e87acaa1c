"""Operator authentication (II.1: a personal credential for every operator, never a shared account).

Bearer JWTs are verified with pyjwt against keys from the identity provider's JWKS (fetched with
aiohttp, cached, refetched on an unknown ``kid`` at most every ``jwks_min_refresh_seconds``) or
from PEM files. ``PyJWKClient`` is not used: it fetches with blocking urllib under a lock and would
stall the event loop. Only asymmetric algorithms are accepted, each key only with its own family.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt

from gateway import rules
from gateway.config import ALLOWED_JWT_ALGORITHMS, Settings
from gateway.errors import GatewayError, Reason

CLAUSE = "II.1"


@dataclass(frozen=True)
class Operator:
    """The person behind a request, from a verified token."""

    id: str
    name: str = ""
    roles: tuple[str, ...] = ()
    dept: str = ""
    org: str = ""
    claims: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def to_policy(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "roles": list(self.roles),
            "dept": self.dept,
            "org": self.org,
        }


def unauthorized(rule: str, en: str, zh: str, error_code: str = "invalid_token") -> GatewayError:
    """401 with a WWW-Authenticate challenge (RFC 6750) and an OperationOutcome saying what was wrong."""
    challenge = f'Bearer realm="emrguard", error="{error_code}", error_description="{en}"'
    if error_code == "":
        challenge = 'Bearer realm="emrguard"'
    return GatewayError(401, "login", [Reason(rule, en, zh, CLAUSE)], {"WWW-Authenticate": challenge})


def claim(claims: dict[str, Any], path: str) -> Any:
    """A claim by dotted path, e.g. ``realm_access.roles`` (Keycloak)."""
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def roles_of(value: Any, claim_format: str) -> tuple[str, ...]:
    """The roles claim: an array of strings; a space-separated string only where the identity
    provider is configured to send that form (``roles_claim_format``). Anything else is refused:
    guessing at a claim's shape is how a role nobody granted gets in (II.1)."""
    if value is None:
        return ()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    if isinstance(value, str) and claim_format == "space-separated":
        return tuple(value.split())
    raise unauthorized(
        rules.AUTH_ROLES_FORMAT,
        "the token's roles claim is not an array of strings (if the identity provider sends them "
        "space-separated, set roles_claim_format = 'space-separated')",
        "令牌的角色声明不是字符串数组(如身份认证服务以空格分隔发送,请设置 roles_claim_format = 'space-separated')",
    )


class KeyStore:
    """Verification keys by kid: JWKS over HTTP (async, cached, bounded refresh) and/or PEM files."""

    def __init__(self, settings: Settings) -> None:
        self.jwks_url = settings.jwks_url
        self.min_refresh = settings.jwks_min_refresh_seconds
        self.cache_seconds = settings.jwks_cache_seconds
        self._keys: dict[str, tuple[jwt.PyJWK, str | None]] = {}  # kid -> (key, the JWK's own "alg")
        self._static: dict[str, Any] = {}
        self._fetched_at = 0.0
        self._attempted_at = -1e9
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self.on_rotation: Any = None
        for path in settings.jwt_public_key_files:
            self._static[Path(path).stem] = Path(path).read_bytes()

    async def start(self) -> None:
        if self.jwks_url:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
            try:
                await self._refresh(force=True)
            except GatewayError:
                pass  # the IdP may come up later; tokens are refused (503) until it does

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def ready(self) -> bool:
        return bool(self._keys or self._static)

    async def _refresh(self, force: bool = False) -> None:
        async with self._lock:
            now = time.monotonic()
            if not force and now - self._attempted_at < self.min_refresh:
                return  # bounded: random kids cannot make us hammer the IdP
            self._attempted_at = now
            assert self._session is not None
            try:
                async with self._session.get(self.jwks_url) as resp:
                    if resp.status != 200:
                        raise ValueError(f"HTTP {resp.status}")
                    doc = await resp.json(content_type=None)
                keys: dict[str, tuple[jwt.PyJWK, str | None]] = {}
                for raw in doc.get("keys", []):
                    if raw.get("use", "sig") != "sig" or raw.get("kty") == "oct":
                        continue  # symmetric keys never verify operator tokens
                    try:
                        keys[raw.get("kid", "")] = (jwt.PyJWK(raw), raw.get("alg"))
                    except (jwt.PyJWKError, jwt.InvalidKeyError):
                        continue  # an unusable key must not block the others
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise GatewayError(
                    503,
                    "transient",
                    [
                        Reason(
                            rules.AUTH_JWKS_UNAVAILABLE,
                            f"identity provider keys unavailable ({exc}); try again shortly",
                            f"身份认证服务密钥暂不可用({exc}),请稍后重试",
                            CLAUSE,
                        )
                    ],
                ) from None
            if self._keys and set(keys) != set(self._keys) and self.on_rotation is not None:
                self.on_rotation()  # a key withdrawn by the IdP must not live on in verified tokens
            self._keys = keys
            self._fetched_at = now

    async def key_for(self, kid: str | None, alg: str) -> Any:
        if self._static:
            if kid in self._static:
                return self._static[kid]
            if len(self._static) == 1 and not self.jwks_url:
                return next(iter(self._static.values()))
        if not self.jwks_url:
            raise unauthorized(
                rules.AUTH_UNKNOWN_KEY, f"token key id '{kid}' is not known", f"令牌密钥标识“{kid}”未知"
            )
        if time.monotonic() - self._fetched_at > self.cache_seconds:
            await self._refresh()
        entry = self._keys.get(kid or "")
        if entry is None and kid is None and len(self._keys) == 1:
            entry = next(iter(self._keys.values()))
        if entry is None:
            await self._refresh()
            entry = self._keys.get(kid or "")
        if entry is None:
            raise unauthorized(
                rules.AUTH_UNKNOWN_KEY,
                f"token key id '{kid}' is not in the identity provider's JWKS",
                f"令牌密钥标识“{kid}”不在身份认证服务的 JWKS 中",
            )
        jwk, jwk_alg = entry
        if jwk_alg and jwk_alg != alg:
            raise unauthorized(
                rules.AUTH_ALG_MISMATCH,
                f"token algorithm {alg} does not match key {kid}",
                f"令牌算法 {alg} 与密钥 {kid} 不符",
            )
        return jwk.key


class TokenVerifier:
    #: Verified tokens kept so that a client's next call skips the signature check (RSA verify and
    #: claim parsing are ~10% of a request). Expiry is still checked on every use.
    CACHE_SIZE = 4096

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = KeyStore(settings)
        self.algorithms = [a for a in settings.jwt_algorithms if a in ALLOWED_JWT_ALGORITHMS]
        self._verified: OrderedDict[str, tuple[Operator, float, float]] = OrderedDict()
        self.keys.on_rotation = self._verified.clear

    async def start(self) -> None:
        await self.keys.start()

    async def close(self) -> None:
        await self.keys.close()

    async def verify_headers(self, headers: Any) -> Operator:
        """The operator of a request: exactly one Authorization header (a proxy in front may have
        checked another one than the gateway would read)."""
        values = headers.getall("Authorization", [])
        if len(values) > 1:
            raise GatewayError(
                400,
                "invalid",
                [
                    Reason(
                        rules.AUTH_SEVERAL,
                        "more than one Authorization header: send exactly one",
                        "存在多个 Authorization 请求头:只能发送一个",
                        CLAUSE,
                    )
                ],
            )
        return await self.verify(values[0] if values else None)

    async def verify(self, authorization: str | None) -> Operator:
        cached = self._verified.get(authorization or "")
        if cached is not None:
            operator, expires, verified_at = cached
            # Also re-verified once per jwks_cache_seconds: a key the identity provider withdrew
            # must stop opening the gateway within that time, not at the token's expiry.
            fresh = time.monotonic() - verified_at < self.settings.jwks_cache_seconds
            if fresh and time.time() < expires + self.settings.jwt_leeway_seconds:
                self._verified.move_to_end(authorization or "")
                return operator
            del self._verified[authorization or ""]
        operator, expires = await self._verify(authorization)
        self._verified[authorization or ""] = (operator, expires, time.monotonic())
        if len(self._verified) > self.CACHE_SIZE:
            self._verified.popitem(last=False)
        return operator

    async def _verify(self, authorization: str | None) -> tuple[Operator, float]:
        if not authorization:
            raise unauthorized(
                rules.AUTH_MISSING_TOKEN,
                "no bearer token: sign in with your personal account",
                "缺少访问令牌:请使用本人账号登录",
                error_code="",
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized(
                rules.AUTH_NOT_BEARER,
                "the Authorization header must be 'Bearer <token>'",
                "Authorization 请求头必须为“Bearer <令牌>”",
                "invalid_request",
            )
        token = token.strip()
        try:
            header = jwt.get_unverified_header(token)
            kid = header.get("kid")
            if kid is not None and not isinstance(kid, str):
                raise jwt.DecodeError("kid is not a string")
        except jwt.PyJWTError:
            raise unauthorized(
                rules.AUTH_MALFORMED_TOKEN, "the token is not a well-formed JWT", "令牌不是格式正确的 JWT"
            ) from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise unauthorized(
                rules.AUTH_ALG_NOT_ALLOWED,
                f"token algorithm '{alg}' is not allowed (allowed: {', '.join(self.algorithms)})",
                f"不允许的令牌签名算法“{alg}”",
            )
        key = await self.keys.key_for(header.get("kid"), alg)
        s = self.settings
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.jwt_leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized(
                rules.AUTH_EXPIRED, "the token has expired: sign in again", "令牌已过期:请重新登录"
            ) from None
        except jwt.ImmatureSignatureError:
            raise unauthorized(
                rules.AUTH_NOT_YET_VALID, "the token is not valid yet (nbf/iat in the future)", "令牌尚未生效"
            ) from None
        except jwt.InvalidIssuerError:
            raise unauthorized(
                rules.AUTH_WRONG_ISSUER,
                "the token was issued by an identity provider this gateway does not trust",
                "令牌签发方不受本网关信任",
            ) from None
        except jwt.InvalidAudienceError:
            raise unauthorized(
                rules.AUTH_WRONG_AUDIENCE,
                "the token was issued for another service",
                "令牌不是为本服务签发的",
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise unauthorized(
                rules.AUTH_MISSING_CLAIM,
                f"the token lacks the '{exc.claim}' claim",
                f"令牌缺少“{exc.claim}”声明",
            ) from None
        except jwt.InvalidSignatureError:
            raise unauthorized(
                rules.AUTH_BAD_SIGNATURE, "the token signature does not verify", "令牌签名校验失败"
            ) from None
        except (jwt.PyJWTError, ValueError, TypeError) as exc:  # incl. a key of the wrong family
            raise unauthorized(
                rules.AUTH_INVALID_TOKEN, f"the token is not valid ({type(exc).__name__})", "令牌无效"
            ) from None
        for name in ("exp", "nbf", "iat"):  # NumericDate is a JSON number (RFC 7519 §2), not "1767…"
            value = claims.get(name)
            if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise unauthorized(
                    rules.AUTH_INVALID_TOKEN,
                    f"the token's '{name}' is not a number",
                    "令牌的时间声明不是数字",
                )
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip():
            raise unauthorized(
                rules.AUTH_NO_OPERATOR, "the token names no operator (sub)", "令牌未标明操作人员(sub)"
            )
        operator = Operator(
            id=sub,
            name=str(claim(claims, s.name_claim) or ""),
            roles=roles_of(claim(claims, s.roles_claim), s.roles_claim_format),
            dept=str(claim(claims, s.dept_claim) or ""),
            org=str(claim(claims, s.org_claim) or ""),
            claims=claims,
        )
        return operator, float(claims["exp"])
