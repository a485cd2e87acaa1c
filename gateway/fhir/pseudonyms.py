"""Research pseudonyms (I.4): reversible, one key per study, mapped back inside the gateway.

For a purpose whose answers are pseudonymised (HRESCH: the verdict's ``pseudonymise``) every id of
an answer is replaced (gateway/fhir/masking.py: ids, versions, references, entry URLs, headers).
A pseudonym is the real id under deterministic authenticated encryption (AES-SIV, the type as
associated data), so the gateway can map it back: a researcher may read ``Observation/ps-…`` or
search ``subject=Patient/ps-…`` (:func:`unmask`, step 2 of the pipeline), and the decision, the care
and seal facts, the upstream and the audit record all see the real id. A pseudonym looks like a FHIR
id: ``ps-`` and lower-case base32 without padding, at most 64 characters. An id too long for that
(more than 28 characters that are neither a UUID nor a decimal number) gets a one-way pseudonym,
``ph-`` and a keyed hash: stable and unlinkable like the others, but it cannot be read back.

One key per study, derived (HKDF-SHA256) from ``pseudonym_secret`` and the study: the ``agreement``
(the ethics approval) of the researcher's grant in force for the purpose, else the researcher's own
id (:func:`study_of`). A pseudonym of another study fails authentication under this study's key and
is refused as unknown (400, ``pseudonym.unknown``): studies cannot be linked, and one study's
pseudonyms open nothing for another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.errors import GatewayError, error
from gateway.fhir.masking import LITERAL, Masking, is_pseudonym, map_values
from gateway.fhir.resource_types import RESOURCE_TYPES

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.hooks import Plugin

#: The purposes whose answers the policy pseudonymises (emr/config/fields: ``pseudonymise: true``;
#: tests/gateway/fhir/test_pseudonyms.py holds the two together).
PSEUDONYMISED_PURPOSES = frozenset({"HRESCH"})
PREFIX = "ps-"
ONE_WAY_PREFIX = "ph-"
MAX_ID = 64
#: AES-SIV adds a 16-byte synthetic IV; 61 base32 characters after the prefix hold 38 bytes.
SIV_BYTES = 16
MAX_SEALED = (MAX_ID - len(PREFIX)) * 5 // 8
ONE_WAY_BYTES = 20
KDF_SALT = b"emrguard-pseudonyms-v2"

UNKNOWN = "pseudonym.unknown"
ONE_WAY = "pseudonym.one-way"

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_DECIMAL = re.compile(r"^(?:0|[1-9][0-9]{0,59})$")
_B32 = re.compile(r"^[a-z2-7]+$")
_SIXBIT = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-."


class UnknownPseudonym(ValueError):
    """A `ps-` id that is not a pseudonym of this study for that type (another study's, or altered)."""


# --- the id inside a pseudonym, packed small ----------------------------------------------------


def _pack(value: str) -> bytes:
    """A FHIR id in few bytes: a UUID in 16, a decimal number as an integer, else 6 bits a character."""
    if _UUID.fullmatch(value):
        return b"\x01" + uuid.UUID(value).bytes
    if _DECIMAL.fullmatch(value):
        n = int(value)
        return b"\x02" + n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")
    bits = 0
    for ch in value:
        bits = (bits << 6) | _SIXBIT.index(ch)
    size = (6 * len(value) + 7) // 8
    return bytes([0x40 + len(value)]) + (bits << (8 * size - 6 * len(value))).to_bytes(size, "big")


def _unpack(data: bytes) -> str:
    kind, body = data[0], data[1:]
    if kind == 1 and len(body) == 16:
        return str(uuid.UUID(bytes=body))
    if kind == 2 and body:
        return str(int.from_bytes(body, "big"))
    n = kind - 0x40
    if 1 <= n <= MAX_ID and len(body) == (6 * n + 7) // 8:
        bits = int.from_bytes(body, "big") >> (8 * len(body) - 6 * n)
        return "".join(_SIXBIT[(bits >> (6 * (n - 1 - i))) & 63] for i in range(n))
    raise UnknownPseudonym("not an id")


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode().rstrip("=").lower()


def _unb32(text: str) -> bytes:
    if not _B32.fullmatch(text):
        raise UnknownPseudonym("not base32")
    try:
        return base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        raise UnknownPseudonym("not base32") from None


# --- the study and its key ----------------------------------------------------------------------


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def study_of(operator_id: str, grants: Iterable[Mapping[str, Any]], purpose: str, now: datetime) -> str:
    """The study whose key a researcher's answers are pseudonymised under.

    The ``agreement`` (ethics approval or study number) of the operator's grant for the purpose in
    force at ``now`` (start inclusive, end exclusive; revoked grants never reach here); of several,
    the one that began last. Without one, the researcher's own id: pseudonyms then link only that
    researcher's own answers, never another's.
    """
    in_force: list[tuple[datetime, str]] = []
    for grant in grants:
        agreement = grant.get("agreement")
        purposes = grant.get("purposes")
        if not (isinstance(agreement, str) and agreement.strip()):
            continue
        if not (isinstance(purposes, list) and purpose in purposes):
            continue
        if grant.get("operator") not in (None, operator_id):
            continue
        start, end = _when(grant.get("start")), _when(grant.get("end"))
        if start is not None and end is not None and start <= now < end:
            in_force.append((start, agreement.strip()))
    return f"agreement:{max(in_force)[1]}" if in_force else f"operator:{operator_id}"


@lru_cache(maxsize=1024)
def _study_keys(secret: bytes, study: str) -> tuple[bytes, bytes]:
    """(AES-SIV key, MAC key) of a study, derived from the gateway's pseudonym secret."""
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=96,
        salt=KDF_SALT,
        info=b"emrguard study pseudonyms\x00" + study.encode(),
    ).derive(secret)
    return okm[:64], okm[64:]


async def request_pseudonyms(
    keys: Pseudonymiser | None, plugins: Sequence[Plugin], ctx: RequestContext
) -> Pseudonymiser | None:
    """The pseudonymiser of this request if its purpose is pseudonymised, else None.

    Called while the request is parsed (pipeline step 2), before the decision's facts: the purpose
    and the grants (the study) are established here by their own plugins, whose ``before_decision``
    is idempotent and runs again in step 3. A purpose the plugin refuses is refused there.
    """
    for plugin in plugins:
        if plugin.name == "purpose":
            try:
                await plugin.before_decision(ctx)
            except GatewayError:
                return None  # refused, with its reason, when step 3 runs the hook again
    if keys is None or ctx.operator is None or ctx.purpose not in PSEUDONYMISED_PURPOSES:
        return None
    for plugin in plugins:
        if plugin.name == "grants":
            await plugin.before_decision(ctx)
    study = study_of(ctx.operator.id, ctx.grants, ctx.purpose, datetime.now(UTC))
    ctx.audit_extra["pseudonym_study"] = study
    return keys.for_study(study)


def unknown_pseudonym(value: str) -> GatewayError:
    shown = value[:70]
    return error(
        status=400,
        code="invalid",
        rule=UNKNOWN,
        en=f"'{shown}' is not a pseudonym of your study for that resource type: pseudonyms are issued per "
        "study, and one of another study, of another type or altered names nothing here; use the ids "
        "of your own answers as they are",
        zh=f"“{shown}”不是本研究中该类资源的假名:假名按研究签发,其他研究的、其他资源类型的或被改动的假名"
        "在此不指向任何记录;请原样使用您所获结果中的 id",
        clause="I.4",
    )


def one_way_pseudonym(value: str) -> GatewayError:
    shown = value[:70]
    return error(
        status=400,
        code="not-supported",
        rule=ONE_WAY,
        en=f"'{shown}' is a one-way pseudonym (the record's id is too long to be encoded in a FHIR id): "
        "it cannot be read or searched by it; find the record by what refers to it or by its content",
        zh=f"“{shown}”是单向假名(该记录的 id 过长,无法编码为 FHIR id):不能据此读取或检索;"
        "请通过引用它的记录或按内容检索",
        clause="I.4",
    )


def refused(value: str) -> GatewayError:
    """Why a `ps-`/`ph-` id cannot be mapped back."""
    return (one_way_pseudonym if value.startswith(ONE_WAY_PREFIX) else unknown_pseudonym)(value)


# --- one study's pseudonyms -------------------------------------------------------------------


class Pseudonymiser(Masking):
    """The pseudonyms of one study: encodes and decodes ids, masks what comes back.

    The gateway holds one for ``pseudonym_secret`` (``gw.pseudonymiser``); each request gets its
    study's with :meth:`for_study`, which also remembers what that request mapped.
    """

    def __init__(self, secret: str, study: str = "") -> None:
        self._secret = secret
        self.study = study
        siv_key, self._mac = _study_keys(secret.encode(), study)
        self._siv = AESSIV(siv_key)
        self._encoded: dict[tuple[str, ...], str] = {}
        #: Real ids this request named by pseudonym, bare: their pseudonym, for texts and links.
        self.named: dict[str, str] = {}

    def for_study(self, study: str) -> Pseudonymiser:
        """The pseudonymiser of ``study``, for one request."""
        return Pseudonymiser(self._secret, study)

    # ids and versions

    def _seal(self, value: str, context: tuple[str, ...]) -> str:
        key = (*context, value)
        found = self._encoded.get(key)
        if found is not None:
            return found
        plain = _pack(value)
        if SIV_BYTES + len(plain) <= MAX_SEALED:
            pseudonym = PREFIX + _b32(self._siv.encrypt(plain, [c.encode() for c in context]))
        else:
            digest = hmac.new(self._mac, "\x00".join(key).encode(), hashlib.sha256).digest()
            pseudonym = ONE_WAY_PREFIX + _b32(digest[:ONE_WAY_BYTES])
        if len(self._encoded) > 65536:
            self._encoded.clear()  # a long-lived instance stays bounded
        self._encoded[key] = pseudonym
        return pseudonym

    def _open(self, pseudonym: str, context: tuple[str, ...]) -> str:
        if pseudonym.startswith(ONE_WAY_PREFIX):
            raise UnknownPseudonym("one-way")
        if not pseudonym.startswith(PREFIX):
            raise UnknownPseudonym("not a pseudonym")
        data = _unb32(pseudonym[len(PREFIX) :])
        if len(data) <= SIV_BYTES:
            raise UnknownPseudonym("too short")
        try:
            real = _unpack(self._siv.decrypt(data, [c.encode() for c in context]))
        except InvalidTag:
            raise UnknownPseudonym("another study's, another type's, or altered") from None
        self._encoded[(*context, real)] = pseudonym
        return real

    def __call__(self, rtype: str, rid: str) -> str:
        """The pseudonym of ``rtype/rid``."""
        return self._seal(rid, ("id", rtype))

    def version(self, rtype: str, rid: str, vid: str) -> str:
        """The pseudonym of version ``vid`` of ``rtype/rid`` (the real id)."""
        return self._seal(vid, ("version", rtype, rid))

    def decode(self, rtype: str, pseudonym: str) -> str:
        """The real id of ``rtype/pseudonym``; UnknownPseudonym if it is not one of this study's."""
        real = self._open(pseudonym, ("id", rtype))
        self.named[real] = pseudonym
        return real

    def decode_version(self, rtype: str, rid: str, pseudonym: str) -> str:
        return self._open(pseudonym, ("version", rtype, rid))

    def decode_any(self, pseudonym: str, types: Iterable[str]) -> tuple[str, str]:
        """(type, real id) of a pseudonym named without its type, trying ``types`` in order."""
        for rtype in types:
            try:
                return rtype, self.decode(rtype, pseudonym)
            except UnknownPseudonym:
                if pseudonym.startswith(ONE_WAY_PREFIX) or not pseudonym.startswith(PREFIX):
                    raise
        raise UnknownPseudonym("no type")


# --- ids in a request: which are pseudonyms, and what they stand for -----------------------------


@dataclass
class Unmasked:
    """A request's path and parameters with every pseudonym mapped back to the real id."""

    path: str
    query: list[tuple[str, str]]
    #: Every id the request names, "Type/id" (real) or the bare id where the type is unknown:
    #: True if it was named by its pseudonym (opa_policies/README.md: ``target.ids``).
    ids: dict[str, bool] = field(default_factory=dict)
    #: The pseudonyms it named.
    seen: set[str] = field(default_factory=set)


def unmask(method: str, path: str, query: Sequence[tuple[str, str]], key: Pseudonymiser | None) -> Unmasked:
    """The request (``method``, ``path`` relative to the base, parameter pairs) with every pseudonym
    it names mapped back to the real id under ``key`` (None: no purpose with pseudonyms, nothing is
    mapped), and every id it names, each marked whether it was a pseudonym.

    A `ps-` id in the path, in `_id`, in a reference (`subject=Patient/ps-…`, absolute, versioned) or
    in the bare value of a reference parameter that is not this study's is refused (400,
    ``pseudonym.unknown``); a `ph-` one cannot be mapped back (400, ``pseudonym.one-way``). Pairs
    keep their order and number. ``method`` is part of the request named; ids mean the same for
    every method.
    """
    del method  # a read, a search and an operation name ids alike
    out = Unmasked(path, list(query))
    pseudo = key is not None

    def mapped(rtype: str, rid: str) -> str:
        if pseudo and is_pseudonym(rid):
            assert key is not None
            try:
                real = key.decode(rtype, rid)
            except UnknownPseudonym:
                raise refused(rid) from None
            out.seen.add(rid)
            out.ids[f"{rtype}/{real}"] = True
            return real
        out.ids.setdefault(f"{rtype}/{rid}", False)
        return rid

    def version(rtype: str, rid: str, vid: str) -> str:
        if pseudo and is_pseudonym(vid):
            assert key is not None
            try:
                real = key.decode_version(rtype, rid, vid)
            except UnknownPseudonym:
                raise unknown_pseudonym(vid) from None
            out.seen.add(vid)
            return real
        return vid

    def reference(value: str) -> str | None:
        match = LITERAL.match(value)
        if match is None or match["type"] not in RESOURCE_TYPES:
            return None
        rtype = match["type"]
        rid = mapped(rtype, match["id"])
        vid = f"/_history/{version(rtype, rid, match['vid'])}" if match["vid"] else ""
        return f"{match['base'] or ''}{rtype}/{rid}{vid}"

    def bare(types: list[str], rid: str, strict: bool) -> str:
        if pseudo and is_pseudonym(rid):
            assert key is not None
            try:
                rtype, real = key.decode_any(rid, types)
            except UnknownPseudonym:
                if not strict:
                    return rid  # a `ps-…` code, say, in a parameter that is not a reference
                raise refused(rid) from None
            out.seen.add(rid)
            out.ids[f"{rtype}/{real}"] = True
            return real
        if strict:
            out.ids.setdefault(f"{types[0]}/{rid}" if len(types) == 1 else rid, False)
        return rid

    segs = [s for s in path.split("/") if s]
    if len(segs) >= 2 and segs[0] in RESOURCE_TYPES and not segs[1].startswith(("$", "_")):
        segs[1] = mapped(segs[0], segs[1])
        if len(segs) >= 4 and segs[2] == "_history":
            segs[3] = version(segs[0], segs[1], segs[3])
        out.path = "/".join(segs)
    rtype = segs[0] if segs and segs[0] in RESOURCE_TYPES else None
    if len(segs) >= 3 and rtype == "Patient" and segs[2] in RESOURCE_TYPES:
        rtype = segs[2]  # a compartment search: its parameters are the inner type's
    out.query = [(k, map_values(rtype, k, v, bare, reference)) for k, v in query]
    return out


def unmask_entries(body: Any, key: Pseudonymiser | None) -> list[Unmasked]:
    """Each batch or transaction entry's request URL unmasked, rewritten in ``body`` in place (what
    is decided is what is sent); one :class:`Unmasked` per entry, in order."""
    out: list[Unmasked] = []
    entries = body.get("entry") if isinstance(body, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        request = entry.get("request") if isinstance(entry, dict) else None
        url = request.get("url") if isinstance(request, dict) else None
        if not isinstance(url, str) or "://" in url.split("?", 1)[0] or url.startswith("//"):
            out.append(Unmasked("", []))
            continue
        assert isinstance(request, dict)
        split = urlsplit(url)
        pairs = parse_qsl(split.query, keep_blank_values=True)
        real = unmask(str(request.get("method", "")), split.path.lstrip("/"), pairs, key)
        if real.seen:
            request["url"] = real.path + (f"?{urlencode(real.query)}" if real.query else "")
        out.append(real)
    return out
