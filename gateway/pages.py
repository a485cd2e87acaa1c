"""A search page holds what the operator may see, and says "more" only when there is more to see (I.4).

Filtering entries out of an upstream page is not enough: the page's shape still speaks. An empty
page followed by a `next` link says withheld matches exist (``Condition?patient=x&_count=1``: "the
patient has a diagnosis you may not see"); so does a short page, a ``total``, or a ``last`` link's
offset. So the gateway builds each page itself from the upstream's pages:

- it reads upstream pages, judging and filtering each, until it holds ``target`` visible matches
  (the client's ``_count``, or :data:`DEFAULT_PAGE_SIZE`) and one more — the proof that a further
  visible match exists, which alone earns a ``next`` link. That link is the gateway's cursor to
  the upstream page holding that match and how many of its matches were already released
  (gateway/paging.py), so the next page starts exactly there;
- it reads at most ``max_reads`` upstream pages (``paging_lookahead_pages``). When that bound is
  reached without a further visible match, there is no ``next`` link and the page says, in an
  informational OperationOutcome entry, that the gateway stopped looking (so a clinician knows to
  narrow the search instead of believing the list complete);
- resources included for a match (``_include``) come only with a page that releases a match of
  their upstream page, and ``total`` survives only when one upstream page held the whole result.

Matches read ahead but not released are judged (to know they are visible) but neither disclosed
nor counted in the record: the record names what was released.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import Reason
from gateway.fhir.filter import apply_verdicts, documents_whole
from gateway.fhir.pseudonyms import Pseudonymiser
from gateway.fhir.resources import Slot, collect
from gateway.policy.decisions import Verdict

#: Matches per page when the client does not say (the common default of FHIR servers).
DEFAULT_PAGE_SIZE = 20
#: The least the gateway asks the upstream for in one page: reading ahead in pages of one entry
#: (``_count=1``) would reach the look-ahead bound after a handful of withheld records.
MIN_UPSTREAM_PAGE = 50
#: The most a client may ask for in one page.
MAX_PAGE_SIZE = 1000
#: Interactions whose answer is a page of matches the gateway assembles.
PAGED_INTERACTIONS = frozenset(
    {"search-type", "search-system", "history-type", "history-instance", "history-system", "operation"}
)
#: Of those, the ones whose upstream page size the gateway sets (``_count``): `$everything` and
#: histories too — with the client's `_count=1` a few withheld records used up the look-ahead, and
#: its "stopped looking" outcome told they exist (red team).
COUNTED_INTERACTIONS = frozenset(
    {"search-type", "search-system", "history-type", "history-instance", "history-system"}
)
#: Operations that answer with pages the gateway sizes as a search's.
COUNTED_OPERATIONS = frozenset({"$everything"})
#: A not-released entry: judged visible, but read ahead (or skipped) and not part of this page.
NOT_THIS_PAGE: Verdict = {"keep": False, "reasons": []}


@dataclass(frozen=True)
class Position:
    """Where a page starts upstream: the upstream page (relative link) and how many of its matches
    earlier pages released."""

    upstream: str
    skip: int = 0


@dataclass
class Page:
    """The assembled page: the body (the first upstream page's Bundle, entries replaced) and what
    the record says about it."""

    body: dict[str, Any]
    next: Position | None = None
    gave_up: bool = False
    upstream_reads: int = 1
    returned: int = 0
    dropped: int = 0
    redacted: int = 0
    disclosed_patients: set[str] = field(default_factory=set)
    disclosed: list[str] = field(default_factory=list)


def is_page(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and body.get("resourceType") == "Bundle"
        and body.get("type") in ("searchset", "history")
    )


def page_size(params: dict[str, list[str]]) -> int | None:
    """The client's ``_count`` (the last one wins, as servers read it); None when not given."""
    values = params.get("_count") or []
    if not values:
        return None
    value = values[-1].strip()
    if not value.isdigit():
        return None  # not a count: the upstream answers it (400), the gateway adds nothing
    return min(int(value), MAX_PAGE_SIZE)


def upstream_count(target: int) -> int:
    """What the gateway asks the upstream for: the page and one more, at least a useful read-ahead."""
    return max(target + 1, MIN_UPSTREAM_PAGE)


def _is_match(entry: Any) -> bool:
    return isinstance(entry, dict) and (entry.get("search") or {}).get("mode", "match") == "match"


def _skip_matches(body: dict[str, Any], skip: int) -> None:
    """Remove the first ``skip`` matches (released by earlier pages) before anything is judged."""
    if skip <= 0:
        return
    kept, seen = [], 0
    for entry in body.get("entry") or []:
        if _is_match(entry) and seen < skip:
            seen += 1
            continue
        kept.append(entry)
    body["entry"] = kept


def _top_entry_slots(slots: list[Slot], body: dict[str, Any]) -> list[int]:
    """Indexes (into slots) of the page's own entries, in entry order."""
    return sorted(
        (i for i, s in enumerate(slots) if s.kind == "entry" and s.bundle is body and s.entry is not None),
        key=lambda i: slots[i].index,
    )


def _literal(resource: dict[str, Any]) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def _references(node: Any, found: set[str]) -> set[str]:
    """Every literal reference in a resource, as "Type/id" (absolute and versioned ones too)."""
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            parts = [p for p in ref.split("/_history/", 1)[0].split("/") if p]
            if len(parts) >= 2:
                found.add(f"{parts[-2]}/{parts[-1]}")
        for value in node.values():
            _references(value, found)
    elif isinstance(node, list):
        for item in node:
            _references(item, found)
    return found


def _linked(include: Slot, matches: list[Slot]) -> bool:
    mine = _literal(include.resource)
    if any(mine in _references(m.resource, set()) for m in matches):
        return True
    theirs = _references(include.resource, set())
    return any(_literal(m.resource) in theirs for m in matches)


def next_link(body: dict[str, Any], upstream_base: str) -> str | None:
    """The upstream's `next` link, relative to its base; None if none, or one the gateway cannot follow."""
    for link in body.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            if isinstance(url, str) and url.startswith(upstream_base):
                return url[len(upstream_base) :].lstrip("/")
            return None  # a link elsewhere is not followed (fail closed: the page simply ends)
    return None


async def assemble(
    first: dict[str, Any],
    start: Position,
    target: int,
    max_reads: int,
    *,
    upstream_base: str,
    fetch: Callable[[str], Awaitable[dict[str, Any]]],
    prepare: Callable[[dict[str, Any]], None],
    judge: Callable[[list[Slot]], Awaitable[list[Verdict]]],
    pseudonymiser: Pseudonymiser | None,
) -> Page:
    """Build one page of ``target`` visible matches starting at ``start`` (see the module docstring).

    ``first`` is the upstream's page at ``start.upstream``, as it came (URLs not yet rewritten);
    ``fetch`` reads another upstream page by its relative link; ``prepare`` rewrites a page's URLs
    to the gateway's base; ``judge`` is the response decision over a page's resources.
    """
    page = Page(body=first)
    entries: list[Any] = []
    body, position, released = first, start, 0
    kept_total = True
    while True:
        upstream_next = next_link(body, upstream_base)
        if "total" in body and (position.skip or upstream_next or page.upstream_reads > 1):
            kept_total = False
        _skip_matches(body, position.skip)
        prepare(body)
        slots = collect(body)
        verdicts = documents_whole(slots, await judge(slots))
        own = _top_entry_slots(slots, body)
        matches = [i for i in own if _is_match(slots[i].entry)]
        visible = [n for n, i in enumerate(matches) if verdicts[i].get("keep", False)]
        need = target - released
        cut = visible[need] if len(visible) > need else None  # ordinal of the first match not released
        released_here = min(len(visible), need)
        held_back = {i for n, i in enumerate(matches) if cut is not None and n >= cut}
        released_matches = [
            i for n, i in enumerate(matches) if verdicts[i].get("keep", False) and (cut is None or n < cut)
        ]
        # An include comes only with a released match it is linked to (either way: `_include`
        # follows the match's reference, `_revinclude` the include's): one pulled in by a withheld
        # or read-ahead match would tell that match exists (red team, HAPI).
        kept = [slots[j] for j in released_matches]
        pending = [i for i in own if not _is_match(slots[i].entry)]
        while True:  # `:iterate` includes hang off other includes: until nothing more links
            linked = [i for i in pending if _linked(slots[i], kept)]
            if not linked:
                break
            kept += [slots[i] for i in linked]
            pending = [i for i in pending if i not in linked]
        held_back |= set(pending)
        nested = {
            j
            for j, s in enumerate(slots)
            if j not in own and any(s.path.startswith(slots[i].path + ".") for i in held_back)
        }
        final = [NOT_THIS_PAGE if i in held_back else v for i, v in enumerate(verdicts)]
        result = apply_verdicts(body, slots, final, pseudonymiser)
        if result.root_dropped:  # a searchset is never a judged resource itself; be safe anyway
            raise ValueError("a search page was judged as one resource")
        not_counted = len(held_back) + len(nested)
        page.returned += len(slots) - not_counted
        page.dropped += result.dropped - not_counted
        page.redacted += result.redacted
        page.disclosed_patients |= result.disclosed_patients
        page.disclosed.extend(result.disclosed)
        entries.extend(body.get("entry") or [])
        released += released_here
        if cut is not None:
            page.next = Position(position.upstream, position.skip + cut)
            break
        if upstream_next is None:
            break
        if page.upstream_reads >= max_reads:
            page.gave_up = True
            break
        body = await fetch(upstream_next)
        position = Position(upstream_next, 0)
        page.upstream_reads += 1
    out = page.body
    if entries:
        out["entry"] = entries
    else:
        out.pop("entry", None)
    if not kept_total or page.next is not None or page.gave_up:
        out.pop("total", None)
    if page.gave_up:
        out.setdefault("entry", []).append(_gave_up_outcome(page.upstream_reads))
    return page


def _gave_up_outcome(reads: int) -> dict[str, Any]:
    note = Reason(
        "emr.paging.lookahead",
        f"the gateway read {reads} pages of matches without finding a further record you may see and "
        "stopped looking; narrow the search (date, code, status) to see the rest",
        f"网关已检索 {reads} 页结果,未找到更多您有权查看的记录,已停止检索;请缩小查询范围(日期、编码、状态)后再查",
    )
    return {
        "resource": {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "information",
                    "code": "incomplete",
                    "details": {"text": f"{note.zh} / {note.en}"},
                    "diagnostics": f"rule={note.rule} clause=I.4",
                }
            ],
        },
        "search": {"mode": "outcome"},
    }
