"""The decision cache: a policy answer reused only where the policy would give it again, exactly.

**Exact by construction.** A decision is a pure function of (policy, input) — no rule reads the
clock, a database or the network (:func:`contract_violations` holds the modules to it) — so an
answer is keyed by the engine's policy ``revision`` (a hash of the modules and ``data.emr.config``
it evaluated) and the canonical bytes of the *whole* input (orjson, sorted keys), hashed; only what
no rule reads is left out: ``request_id``, and ``time``. Everything a decision reads — roles,
purpose, grants, seal state, patient facts, the target, the entries — is in the key: a seal, a
revoked grant or a new care team is another input, a miss, and takes effect on the very next
request. Nothing is ever invalidated, because nothing can go stale.

**Time.** ``time`` is left out of the key because the policy says how long its answer holds: every
package that reads ``input.time`` contributes to the decisions' ``valid_until`` (the first grant
boundary ahead, RFC 3339, whole seconds rounded down; null: none ahead). An answer decided at
``t0`` is reused for a request at ``t`` only if ``t0 <= t < valid_until``, to the nanosecond of the
gateway's timestamp (a clock stepped back is a miss, not a reuse).

**Responses per distinct entry.** The policy's verdict on an entry depends only on the input less
its entries and on the entry itself (opa_policies/emr/response: whatever is computed over all the
entries — distinct types, contents, patient lists — is looked up per entry; nothing couples two
entries), so verdicts are keyed by (revision, the input less its entries, the entry less ``id`` and
``path``) and a search hits as a read does. The response's alerts are a union over its entries
(break-the-glass, sealed records), so an entry decided in a batch that raised no alert raises none
alone, and is cached with none; entries decided in a batch that raised one are not cached one by
one (which entry raised it is not said), only the whole answer is, under the whole input.

Bounded (least recently used, ``decision_cache_size`` answers; 0: off), observable (``/metrics``).
Only an engine whose revision is *pinned* (the embedded engine: it hashes what it loads) is
cached; an OPA server can be handed other policies behind the gateway's back.
"""

from __future__ import annotations

import calendar
import hashlib
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog

from gateway.policy.engine import REQUEST_DECISION, RESPONSE_DECISION, PolicyEngine
from gateway.policy.files import policy_data, policy_modules, revision_of

log = structlog.get_logger("emrguard.policy.cache")

#: Input fields no rule reads (held by :func:`contract_violations`): never in a key.
UNKEYED = frozenset({"request_id", "time"})
#: Entry fields no rule decides on (opa_policies/README.md): equal entries but for these share a verdict.
UNKEYED_ENTRY = frozenset({"id", "path"})
#: Builtins that would make a decision depend on something else than (policy, input).
IMPURE_BUILTINS = (
    "time.now_ns",
    "http.send",
    "opa.runtime",
    "rand.intn",
    "uuid.rfc4122",
    "net.lookup_ip_addr",
)
KINDS = ("request", "response_entry", "response_whole")

_UTC = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z")


def utc_ns(value: Any) -> int | None:
    """Nanoseconds since the epoch of an RFC 3339 UTC timestamp in the gateway's form
    (``2026-12-01T08:00:00.000Z``, fraction optional, ``Z`` only); None for anything else, which is
    never cached (the policy parses it, and other spellings are not worth a second parser)."""
    if not isinstance(value, str):
        return None
    m = _UTC.fullmatch(value)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(x) for x in m.groups()[:6])
    if not (
        1970 <= year and 1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 60
    ):
        return None
    if day > calendar.monthrange(year, month)[1]:
        return None
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    fraction = int((m.group(7) or "0").ljust(9, "0"))
    return seconds * 1_000_000_000 + fraction


def canonical(value: Any) -> bytes:
    """The canonical bytes of a JSON value: orjson with sorted keys (what the engine gets, in order)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def entry_key(entry: Any) -> bytes:
    """An entry as the policy may judge it: less ``id`` and ``path`` (gateway/decide.py dedupes by it)."""
    if isinstance(entry, dict):
        entry = {k: v for k, v in entry.items() if k not in UNKEYED_ENTRY}
    return canonical(entry)


def _digest(*parts: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=32)
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()


@dataclass(frozen=True, slots=True)
class Asked:
    """A question as the cache sees it: the key of the input and the instant it is asked at."""

    key: bytes
    at_ns: int


def request_key(revision: str, doc: Mapping[str, Any]) -> Asked | None:
    """The key of a request decision's input; None if it cannot be cached (no time in the gateway's form)."""
    at = utc_ns(doc.get("time"))
    if at is None:
        return None
    try:
        body = canonical({k: v for k, v in doc.items() if k not in UNKEYED})
    except orjson.JSONEncodeError:
        return None  # the engine cannot be given it either: it answers (fails) on its own
    return Asked(_digest(b"request", revision.encode(), body), at)


def response_key(revision: str, doc: Mapping[str, Any]) -> Asked | None:
    """The key of a response decision's input less its entries: what every verdict shares."""
    at = utc_ns(doc.get("time"))
    if at is None:
        return None
    try:
        body = canonical({k: v for k, v in doc.items() if k not in UNKEYED and k != "entries"})
    except orjson.JSONEncodeError:
        return None
    return Asked(_digest(b"response", revision.encode(), body), at)


def entry_asked(shared: Asked, key: bytes) -> Asked:
    """One distinct entry of a response: its verdict's key."""
    return Asked(_digest(b"entry", shared.key, key), shared.at_ns)


def whole_asked(shared: Asked, keys: Iterable[bytes]) -> Asked:
    """All the distinct entries of a response, in order: the whole answer's key."""
    return Asked(_digest(b"whole", shared.key, *keys), shared.at_ns)


@dataclass(slots=True)
class Held:
    """An answer and the window it holds in: ``since_ns <= t < until_ns`` (None: no end)."""

    value: bytes
    since_ns: int
    until_ns: int | None

    def holds_at(self, at_ns: int) -> bool:
        return self.since_ns <= at_ns and (self.until_ns is None or at_ns < self.until_ns)


def window(at_ns: int, valid_until: str | None) -> tuple[int, int | None] | None:
    """The window an answer decided at ``at_ns`` holds in, or None if it holds for no later instant
    (``valid_until`` at or before the time it was asked, or not in the form the policy writes)."""
    if valid_until is None:
        return at_ns, None
    until = utc_ns(valid_until)
    if until is None or until <= at_ns:
        return None
    return at_ns, until


class DecisionCache:
    """A bounded LRU of policy answers, keyed by :class:`Asked`; one event loop uses it (no lock)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._held: OrderedDict[bytes, Held] = OrderedDict()
        self.hits = dict.fromkeys(KINDS, 0)
        self.misses = dict.fromkeys(KINDS, 0)
        self.expired = dict.fromkeys(KINDS, 0)
        self.uncacheable = dict.fromkeys(KINDS, 0)
        self.evictions = 0
        #: Decisions (request, response) answered without asking the engine, and with it.
        self.answered = {d: {"cache": 0, "engine": 0} for d in ("request", "response")}
        #: Per policy revision: whether its modules keep the contract the cache relies on.
        self._admitted: dict[str, bool] = {}

    def __len__(self) -> int:
        return len(self._held)

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def admits(self, engine: PolicyEngine) -> bool:
        """Whether this engine's answers may be cached: on, a pinned revision, and the modules of
        that revision (read again, and hashed to the same revision) keep the contract."""
        if not self.enabled or not engine.revision_pinned:
            return False
        revision = engine.revision
        known = self._admitted.get(revision)
        if known is None:
            known = self._check(engine)
            self._admitted[revision] = known
        return known

    def _check(self, engine: PolicyEngine) -> bool:
        directory = getattr(engine, "policy_dir", None)
        if not isinstance(directory, Path):
            return False
        try:
            modules = policy_modules(directory)
            data = policy_data(directory)
        except (OSError, ValueError) as exc:
            log.error("decision_cache_off", reason=f"policy files unreadable: {exc}")
            return False
        if revision_of(modules, data.get("emr", {}).get("config")) != engine.revision:
            log.error("decision_cache_off", reason="the policy files changed since the engine loaded them")
            return False
        problems = contract_violations(modules, data)
        if problems:
            log.error(
                "decision_cache_off", reason="the policies break the cache's contract", problems=problems
            )
            return False
        return True

    def get(self, asked: Asked, kind: str) -> Held | None:
        held = self._held.get(asked.key)
        if held is not None and held.holds_at(asked.at_ns):
            self._held.move_to_end(asked.key)
            self.hits[kind] += 1
            return held
        self.misses[kind] += 1
        if held is not None and held.until_ns is not None and asked.at_ns >= held.until_ns:
            del self._held[asked.key]  # time only moves on: it will not hold again
            self.expired[kind] += 1
        return None

    def put(
        self, asked: Asked, value: bytes, valid_until: str | None, kind: str, *, not_after: int | None = None
    ) -> bool:
        """Keep an answer decided at ``asked.at_ns`` for as long as it holds (and not past
        ``not_after``, the end of the answers it was made of); False if it holds for no later instant."""
        span = window(asked.at_ns, valid_until)
        if span is not None and not_after is not None:
            span = (span[0], not_after if span[1] is None else min(span[1], not_after))
        if span is None or (span[1] is not None and span[1] <= span[0]):
            self.uncacheable[kind] += 1
            return False
        self._held[asked.key] = Held(value, *span)
        self._held.move_to_end(asked.key)
        while len(self._held) > self.capacity:
            self._held.popitem(last=False)
            self.evictions += 1
        return True

    def not_kept(self, kind: str) -> None:
        """An answer that may not be cached (see the module's docstring) was given."""
        self.uncacheable[kind] += 1

    def answer(self, decision: str, *, cached: bool) -> None:
        """A decision (``request`` or ``response``) was answered from the cache alone, or not."""
        self.answered[decision]["cache" if cached else "engine"] += 1

    def hit_rate(self) -> float | None:
        """Hits over lookups, all kinds together (None: no lookup yet). A whole-response lookup
        follows its entries' misses, so its miss is not another miss (bench/run.py counts alike;
        ``answered`` says how many decisions needed no engine at all)."""
        hits = sum(self.hits.values())
        lookups = hits + self.misses["request"] + self.misses["response_entry"]
        return hits / lookups if lookups else None

    def metrics(self) -> str:
        """The counters in the Prometheus text exposition format (version 0.0.4)."""
        per_kind = [
            ("hits_total", "Policy answers reused from the cache.", self.hits),
            ("misses_total", "Cache lookups that found no answer holding now.", self.misses),
            ("expired_total", "Misses on an answer past its valid_until (dropped).", self.expired),
            ("uncacheable_total", "Answers not kept: holding for no later instant, or alerts of several entries.", self.uncacheable),
        ]  # fmt: skip
        families: list[tuple[str, str, str, list[tuple[str, int]]]] = [
            ("decisions_total", "counter", "Policy decisions, answered from the cache alone or by the engine.",
             [(f'{{decision="{d}",answered="{how}"}}', n) for d, a in self.answered.items() for how, n in a.items()]),
            *((name, "counter", text, [(f'{{decision="{k}"}}', n) for k, n in counts.items()])
              for name, text, counts in per_kind),
            ("evictions_total", "counter", "Answers dropped to stay within the bound.", [("", self.evictions)]),
            ("entries", "gauge", "Answers held now.", [("", len(self._held))]),
            ("capacity", "gauge", "The bound (decision_cache_size; 0: off).", [("", self.capacity)]),
        ]  # fmt: skip
        lines: list[str] = []
        for name, kind, text, samples in families:
            full = f"emrguard_decision_cache_{name}"
            lines += [f"# HELP {full} {text}", f"# TYPE {full} {kind}"]
            lines += [f"{full}{labels} {value}" for labels, value in samples]
        return "\n".join(lines) + "\n"


# --- the contract the cache relies on, checked on the policy modules ------------------------------

_PACKAGE = re.compile(r"^package\s+([\w.]+)", re.M)
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"|`[^`]*`')
_GET_INPUT = re.compile(r'object\.get\(\s*input\s*,\s*"((?:[^"\\]|\\.)*)"')
_INPUT = re.compile(r"\binput\b(\s*\.\s*([A-Za-z_]\w*)|\s*\[)?")
_VALID_UNTIL_RULE = re.compile(r"^valid_until\s*(:=|=|if\b|\{)", re.M)


_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|`[^`]*`|#[^\n]*')


def _code(text: str) -> str:
    """The module with its comments removed (a ``#`` outside a string starts one)."""
    return _TOKEN.sub(lambda m: "" if m.group(0).startswith("#") else m.group(0), text)


def input_fields(text: str) -> tuple[set[str], list[str]]:
    """The top-level input fields a module reads (``input.x``, ``input["x"]``,
    ``object.get(input, "x", …)``), and the reads this check cannot follow (``input`` whole)."""
    code = _code(text)
    fields = {m.group(1) for m in _GET_INPUT.finditer(code)}
    bare = _GET_INPUT.sub("object.get(_, ", code)
    literal_index = re.compile(r'\binput\s*\[\s*"((?:[^"\\]|\\.)*)"\s*\]')
    fields |= {m.group(1) for m in literal_index.finditer(bare)}
    bare = _STRING.sub('""', literal_index.sub("_", bare))
    unfollowed: list[str] = []
    for m in _INPUT.finditer(bare):
        if m.group(2):
            fields.add(m.group(2))
        else:
            line = bare.count("\n", 0, m.start()) + 1
            unfollowed.append(f"line {line}: {bare.splitlines()[line - 1].strip()[:80]}")
    return fields, unfollowed


def _decision_package(path: str) -> str:
    """``emr/request/decision`` -> ``emr.request``."""
    return path.rsplit("/", 1)[0].replace("/", ".")


def contract_violations(modules: Mapping[str, str], data: Mapping[str, Any]) -> list[str]:
    """What in these policies would make a cached answer differ from a fresh one (empty: none).

    - a builtin that reads the clock, the network or chance (``time.now_ns``, ``http.send`` …);
    - a read of ``request_id`` (left out of the key), or of ``input`` whole (it cannot be followed);
    - a package that reads ``input.time`` without a ``valid_until`` rule that both decisions carry;
    - decisions without ``valid_until``; data outside ``data.emr.config`` (not in the revision).
    """
    problems: list[str] = []
    code_of: dict[str, str] = {}  # package -> the code of its modules
    time_readers: set[str] = set()
    for name, text in modules.items():
        code = _code(text)
        for builtin in IMPURE_BUILTINS:
            if re.search(rf"\b{re.escape(builtin)}\s*\(", code):
                problems.append(f"{name}: calls {builtin} (a decision must depend on its input alone)")
        fields, unfollowed = input_fields(text)
        problems.extend(f"{name}: reads input whole ({u})" for u in unfollowed)
        for field in sorted(fields & (UNKEYED - {"time"})):
            problems.append(f"{name}: reads input.{field}, which the cache leaves out of its key")
        m = _PACKAGE.search(code)
        package = m.group(1) if m else name
        code_of[package] = code_of.get(package, "") + "\n" + code
        if "time" in fields:
            time_readers.add(package)
    decisions = sorted({_decision_package(REQUEST_DECISION), _decision_package(RESPONSE_DECISION)})
    for decision in decisions:
        if '"valid_until"' not in code_of.get(decision, ""):
            problems.append(f"package {decision}: its decision has no valid_until")
    for package in sorted(time_readers):
        if not _VALID_UNTIL_RULE.search(code_of[package]):
            problems.append(f"package {package}: reads input.time but has no valid_until rule")
        for decision in decisions:
            if not re.search(rf"\bdata\.{re.escape(package)}\.valid_until\b", code_of.get(decision, "")):
                problems.append(
                    f"package {package}: reads input.time, but the decision of {decision} does not carry "
                    f"data.{package}.valid_until"
                )
    outside = sorted(set(data) - {"emr"}) + sorted(f"emr.{k}" for k in data.get("emr", {}) if k != "config")
    problems.extend(f"data.{k}: policy data outside data.emr.config is not in the revision" for k in outside)
    return problems
