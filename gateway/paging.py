"""The gateway owns paging: upstream paging links never reach the client (I.4, II.2).

A server's `next` link may name a stored search instead of the query (HAPI:
``BASE?_getpages=<uuid>&_getpagesoffset=20``): followed as it is, page 2 would be decided without
the query that made it — only the per-resource filter would stand, and a link copied from another
operator would open their search. So every paging link of a search or history page is replaced by
the gateway's own cursor, ``<base>?_cursor=<token>``: the upstream link and the *original request*,
bound to the operator and the purpose, expiring, MAC-keyed so it cannot be forged or edited. A page
reached by a cursor is decided as the original request, for the same operator and purpose, and the
upstream link is forwarded exactly as the server gave it. Raw upstream paging parameters from a
client are refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

import orjson

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
MAC_BYTES = 16
KEY_LABEL = b"emrguard-paging-v1"


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
        self._key = hmac.new(secret.encode(), KEY_LABEL, hashlib.sha256).digest()
        self.ttl = ttl_seconds

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:MAC_BYTES]

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
            }
        )
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def open(self, token: str, operator: str) -> Cursor:
        """The cursor, if the token is one of ours, unaltered, unexpired and this operator's."""
        try:
            body, mac = token.split(".", 1)
            payload = _unb64(body)
            good = hmac.compare_digest(_unb64(mac), self._mac(payload))
            doc = orjson.loads(payload) if good else None
            cursor = (
                Cursor(
                    upstream=str(doc["u"]),
                    method=str(doc["m"]),
                    path=str(doc["p"]),
                    query=[(str(k), str(v)) for k, v in doc["q"]],
                    operator=str(doc["o"]),
                    purpose=None if doc["s"] is None else str(doc["s"]),
                    expires=float(doc["e"]),
                )
                if doc is not None
                else None
            )
        except (ValueError, TypeError, KeyError, orjson.JSONDecodeError):
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

    def own_links(
        self,
        body: Any,
        upstream_base: str,
        public_base: str,
        original: Cursor,
    ) -> None:
        """Replace the paging links of a search or history page by cursors, in place; paging links
        of Bundles nested in a batch response are removed (the client runs that search itself)."""
        if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
            return
        if body.get("type") in PAGED_BUNDLES:
            body["link"] = self._links(body.get("link"), upstream_base, public_base, original)
        elif body.get("type") in NESTED_RESPONSES:
            for entry in body.get("entry") or []:
                nested = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(nested, dict) and nested.get("resourceType") == "Bundle":
                    links = nested.get("link")
                    if isinstance(links, list):
                        nested["link"] = [
                            link
                            for link in links
                            if not (isinstance(link, dict) and link.get("relation") in PAGING_RELATIONS)
                        ]

    def _links(self, links: Any, upstream_base: str, public_base: str, original: Cursor) -> list[Any]:
        out: list[Any] = []
        for link in links if isinstance(links, list) else []:
            url = link.get("url") if isinstance(link, dict) else None
            paging = isinstance(link, dict) and (
                link.get("relation") in PAGING_RELATIONS
                # A page's `self` names the page the server's way (`_getpages`, `_offset`): a cursor too.
                or (isinstance(url, str) and any(f"{p}=" in url for p in UPSTREAM_PAGE_PARAMS))
            )
            if not paging:
                out.append(link)  # self of a first page (rewritten to the gateway's base), other relations
                continue
            if not isinstance(url, str) or not url.startswith(upstream_base):
                continue  # a link the gateway cannot follow itself is not passed on (fail closed)
            assert isinstance(link, dict)
            rel = url[len(upstream_base) :].lstrip("/")
            cursor = Cursor(
                upstream=rel,
                method=original.method,
                path=original.path,
                query=original.query,
                operator=original.operator,
                purpose=original.purpose,
                expires=time.time() + self.ttl,
            )
            out.append({**link, "url": f"{public_base}?{CURSOR_PARAM}={self.seal(cursor)}"})
        return out
