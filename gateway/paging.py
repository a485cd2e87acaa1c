"""The gateway owns paging: upstream paging links never reach the client (I.4, II.2).

A server's `next` link may name a stored search instead of the query (HAPI:
``BASE?_getpages=<uuid>&_getpagesoffset=20``): followed as it is, page 2 would be decided without
the query that made it — only the per-resource filter would stand, and a link copied from another
operator would open their search. So no upstream paging link reaches the client: a page's only
links are its `self` and — when gateway/pages.py has seen a further visible match — a `next` that is
the gateway's own cursor, ``<base>?_cursor=<token>``: the upstream page to resume at and how many of
its matches were already released, with the *original request*, bound to the operator and the
purpose, expiring, encrypted and authenticated (AES-GCM) so it can be neither read — its upstream
link names real ids, which a researcher must not see — nor forged or edited. A page reached by a cursor is decided
as the original request, for the same operator and purpose, and the upstream link is forwarded
exactly as the server gave it. Raw upstream paging parameters from a client are refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway import rules
from gateway.errors import GatewayError, error

CURSOR_PARAM = "_cursor"
#: Upstream paging parameters that name a server-side search (HAPI): only the gateway follows them.
RAW_PAGING_PARAMS = frozenset({"_getpages", "_getpagesoffset"})
PAGING_RELATIONS = frozenset({"next", "previous", "prev", "first", "last"})
#: How servers name a page in its URL (HAPI: _getpages/_getpagesoffset; Medplum, HAPI history: _offset).
UPSTREAM_PAGE_PARAMS = (*RAW_PAGING_PARAMS, "_offset")
PAGED_BUNDLES = frozenset({"searchset", "history"})
NESTED_RESPONSES = frozenset({"batch-response", "transaction-response"})
NONCE_BYTES = 12
PAD_BYTES = 256
#: v2: encrypted (v1 was signed only, and its upstream link named real ids to a researcher).
KEY_LABEL = b"emrguard-paging-v2"


@dataclass(frozen=True)
class Cursor:
    """What a cursor carries: the upstream link and the request whose page it is."""

    upstream: str  # relative to the upstream base: "?_getpages=…" or "Observation?…&_offset=20"
    method: str
    path: str
    query: list[tuple[str, str]]
    operator: str
    purpose: str | None
    expires: float
    #: Matches of the upstream page that earlier pages released (gateway/pages.py).
    skip: int = 0

    @property
    def original(self) -> str:
        """The original request, for the audit record ("Observation?subject=…")."""
        from urllib.parse import urlencode

        return f"{self.path}?{urlencode(self.query)}" if self.query else self.path


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _refused(status: int, rule: str, en: str, zh: str) -> GatewayError:
    return error(
        status=status, code="invalid" if status == 400 else "forbidden", rule=rule, en=en, zh=zh, clause="I.4"
    )


class Pager:
    """Makes and opens cursors with a key derived from the gateway's secret."""

    def __init__(self, secret: str, ttl_seconds: float) -> None:
        self._aead = AESGCM(hmac.new(secret.encode(), KEY_LABEL, hashlib.sha256).digest())
        self.ttl = ttl_seconds

    def seal(self, cursor: Cursor) -> str:
        payload = orjson.dumps(
            {
                "u": cursor.upstream,
                "m": cursor.method,
                "p": cursor.path,
                "q": cursor.query,
                "o": cursor.operator,
                "s": cursor.purpose,
                "e": int(cursor.expires),
                "k": cursor.skip,
            }
        )
        # Padded to a fixed step: AES-GCM keeps the length, and the skip (how many matches of the
        # upstream page were passed, withheld ones too) changed it by a character (red team).
        payload += b" " * (-len(payload) % PAD_BYTES)
        nonce = os.urandom(NONCE_BYTES)
        return f"{_b64(nonce)}.{_b64(self._aead.encrypt(nonce, payload, KEY_LABEL))}"

    def open(self, token: str, operator: str) -> Cursor:
        """The cursor, if the token is one of ours, unaltered, unexpired and this operator's."""
        try:
            nonce, sealed = (_unb64(part) for part in token.split(".", 1))
            doc = orjson.loads(self._aead.decrypt(nonce, sealed, KEY_LABEL))
            cursor = (
                Cursor(
                    upstream=str(doc["u"]),
                    method=str(doc["m"]),
                    path=str(doc["p"]),
                    query=[(str(k), str(v)) for k, v in doc["q"]],
                    operator=str(doc["o"]),
                    purpose=None if doc["s"] is None else str(doc["s"]),
                    expires=float(doc["e"]),
                    skip=int(doc.get("k", 0)),
                )
                if doc is not None
                else None
            )
        except (ValueError, TypeError, KeyError, AttributeError, InvalidTag, orjson.JSONDecodeError):
            cursor = None
        if cursor is None:
            raise _refused(
                400,
                rules.PAGING_BAD_CURSOR,
                "this paging cursor was not issued by the gateway or was altered",
                "该翻页游标不是本网关签发的,或已被改动",
            )
        if cursor.operator != operator:
            raise _refused(
                403,
                rules.PAGING_NOT_YOURS,
                "this paging cursor belongs to another operator's search; run the search yourself",
                "该翻页游标属于其他操作人员的查询;请自行发起查询",
            )
        if cursor.expires < time.time():
            raise _refused(
                400,
                rules.PAGING_EXPIRED,
                "this paging cursor has expired; run the search again",
                "该翻页游标已过期;请重新查询",
            )
        return cursor

    def check_purpose(self, cursor: Cursor, purpose: str | None) -> None:
        if cursor.purpose != purpose:
            raise _refused(
                403,
                rules.PAGING_PURPOSE,
                "this paging cursor was issued for another purpose of use; run the search again",
                "该翻页游标是为其他使用目的签发的;请重新查询",
            )

    def link(self, original: Cursor, upstream: str, skip: int, public_base: str) -> str:
        """The gateway's URL for the page of ``original`` that starts at ``upstream`` (a link
        relative to the upstream base) after ``skip`` of its matches."""
        cursor = Cursor(
            upstream=upstream,
            method=original.method,
            path=original.path,
            query=original.query,
            operator=original.operator,
            purpose=original.purpose,
            expires=time.time() + self.ttl,
            skip=skip,
        )
        return f"{public_base}?{CURSOR_PARAM}={self.seal(cursor)}"


def strip_paging_links(body: Any) -> None:
    """Upstream paging links of a page the gateway did not build (``_count=0``, a page in a batch
    response) are removed: no upstream link reaches the client, and the client runs such a search
    itself to get the gateway's paging (gateway/pages.py)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        return
    if body.get("type") in PAGED_BUNDLES:
        _strip(body)
    elif body.get("type") in NESTED_RESPONSES:
        for entry in body.get("entry") or []:
            nested = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(nested, dict) and nested.get("resourceType") == "Bundle":
                _strip(nested)


def _strip(bundle: dict[str, Any]) -> None:
    links = bundle.get("link")
    if isinstance(links, list):
        bundle["link"] = [
            link
            for link in links
            if isinstance(link, dict)
            and link.get("relation") not in PAGING_RELATIONS
            and not any(f"{p}=" in str(link.get("url")) for p in UPSTREAM_PAGE_PARAMS)
        ]
