"""Write governance (I.3 who changed what; I.4 a write may only change what one may see).

Beside opa_policies/emr/write/. Three things, each at its step of the request path (the pre-read
also stands before an operation on one record, which answers about it):

- before the decision, a write's body is hashed into the audit record;
- before it is forwarded, an update, patch or delete by id is judged against the record as it is
  now, as if it were read (else a write could change a record its author may not see), and by what
  it would produce (a patch could move a record into another patient's chart, an update strip the
  labels that restrict it); the version seen is pinned with If-Match so it cannot change between
  this check and the write;
- after the upstream answers, the versions the write produced join the versions it replaced.
"""

from __future__ import annotations

import hashlib
from typing import Any

import jsonpatch
import jsonpointer
import orjson

from gateway import rules
from gateway.context import RequestContext
from gateway.decide import judge, request_decision
from gateway.errors import GatewayError, Reason, error, shown
from gateway.fhir.outcomes import not_available
from gateway.fhir.request import FhirRequest
from gateway.fhir.resources import collect, resource_patients
from gateway.hooks import Plugin
from gateway.policy.files import policy_data, policy_dir
from gateway.proxy import UpstreamResponse
from gateway.runtime import Gateway
from gateway.store import utc_now

WRITE_BY_ID = ("update", "patch", "delete")
#: The label systems whose codes restrict a record, by their name in the classification data
#: (opa_policies/emr/config/classification: every alias, canonical form, the same data grading uses).
LABEL_SYSTEM_NAMES = frozenset({"Confidentiality", "ActCode"})
DEFAULT_LABEL_SYSTEMS = frozenset(
    {
        "http://terminology.hl7.org/codesystem/v3-confidentiality",
        "http://terminology.hl7.org/codesystem/v3-actcode",
    }
)


def canonical_system(system: Any) -> str:
    """As the policy compares systems: lower case, no blanks or slashes at either end."""
    return system.strip(" /").lower() if isinstance(system, str) else ""


def label_systems(classification: dict[str, Any]) -> frozenset[str]:
    systems = classification.get("code_systems") if isinstance(classification, dict) else None
    if not isinstance(systems, dict):
        return DEFAULT_LABEL_SYSTEMS
    return frozenset(s for s, name in systems.items() if name in LABEL_SYSTEM_NAMES) or DEFAULT_LABEL_SYSTEMS


PATCH_FAILED = "fhir.patch-failed"
PRE_READ_FAILED = "upstream.pre-read"


def judged_first(request: FhirRequest) -> bool:
    """A write by id changes the record as it is now; an operation on a record ($validate, $meta …)
    answers about it — HAPI's $validate OperationOutcome quotes its codes. Either is judged against
    the record first, as if it were read (the answer itself holds no resource to judge)."""
    if not request.id:
        return False
    return request.interaction in WRITE_BY_ID or (
        request.interaction == "operation" and request.level == "instance"
    )


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def labels(resource: Any, systems: frozenset[str] = DEFAULT_LABEL_SYSTEMS) -> set[str]:
    """The restricting labels of a resource, in whichever spelling of their system."""
    meta = resource.get("meta") if isinstance(resource, dict) else None
    return {
        str(c.get("code")).strip().upper()
        for c in (meta or {}).get("security") or []
        if isinstance(c, dict) and canonical_system(c.get("system")) in systems
    }


def write_result(target: FhirRequest, current: dict[str, Any]) -> Any:
    """What a write leaves behind: the patched current version, or the new body of an update."""
    if target.interaction != "patch":
        return target.body
    try:
        return jsonpatch.apply_patch(current, target.body)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError) as exc:
        raise error(
            status=422,
            code="processing",
            rule=PATCH_FAILED,
            en=f"the patch cannot be applied: {exc}",
            zh="补丁无法应用",
        ) from None


class WriteGuardPlugin(Plugin):
    name = "write_guard"

    def __init__(self) -> None:
        self.gw: Gateway | None = None
        self.label_systems = DEFAULT_LABEL_SYSTEMS

    async def start(self, gw: Gateway) -> None:
        self.gw = gw
        config = policy_data(policy_dir(gw.settings.policy_dir)).get("emr", {}).get("config", {})
        self.label_systems = label_systems(config.get("classification", {}))

    async def before_decision(self, ctx: RequestContext) -> None:
        if ctx.fhir is not None and ctx.fhir.is_write:
            ctx.audit_extra["body_hash"] = sha256(ctx.body)

    async def before_forward(self, ctx: RequestContext) -> dict[str, str]:
        """Judge the current versions of the records a write changes; If-Match for the write."""
        assert self.gw is not None and ctx.fhir is not None
        gw = self.gw
        targets = [r for r in [ctx.fhir, *ctx.fhir.entries] if judged_first(r)]
        if not targets:
            return {}
        currents: list[tuple[FhirRequest, Any, str | None]] = []
        writes: list[tuple[FhirRequest, dict[str, Any]]] = []
        for target in targets:
            resp = await gw.upstream.send(
                "GET", f"{target.resource_type}/{target.id}", "", None, b"", ctx.request_id
            )
            if resp.status in (404, 410):
                # Nothing there (or deleted): answered as a record withheld is, or trying ids by
                # PUT/PATCH/DELETE/$op would tell which exist (red team). So no update-as-create
                # through the gateway: a new record is created by POST, its id the server's.
                ctx.audit_extra["upstream_says"] = resp.status
                raise not_available()
            if resp.status != 200 or not isinstance(resp.body, dict):
                raise error(
                    status=502,
                    code="transient",
                    rule=PRE_READ_FAILED,
                    en="the current version of the record could not be read",
                    zh="无法读取记录的当前版本",
                )
            currents.append((target, resp.body, resp.headers.get("ETag")))
            if target.interaction in ("patch", "update"):
                writes.append((target, resp.body))
        slots = [slot for _, body, _ in currents for slot in collect(body)]
        if slots:
            verdicts = await judge(gw, ctx, ctx.request_input, slots)
            if not all(v["keep"] for v in verdicts):
                refused = [
                    Reason.from_policy(r) for v in verdicts if not v["keep"] for r in v.get("reasons") or []
                ]
                withheld = Reason(
                    rules.POLICY_WITHHELD, "the record is withheld by policy", "该记录依策略不予提供", "I.4"
                )
                ctx.reasons = refused or [withheld]  # for the audit record; the client sees "not available"
                raise not_available()
        if writes:
            await self._decide_effect(ctx, writes)
        replaced = [(t, body, etag) for t, body, etag in currents if t.interaction in WRITE_BY_ID]
        if not replaced:
            return {}  # an operation on a record: judged, nothing is replaced
        ctx.audit_extra["versions_before"] = [
            (body.get("meta") or {}).get("versionId") for _, body, _ in replaced
        ]
        # Hashes of what was there, so "who changed what" is answerable from the audit alone (I.3, II.2).
        ctx.audit_extra["body_hashes_before"] = [
            sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)) for _, body, _ in replaced
        ]
        for target, body, etag in replaced:  # the top-level write is pinned to the version judged
            version = (body.get("meta") or {}).get("versionId")
            if target is ctx.fhir and "If-Match" not in ctx.headers and (etag or version):
                return {"If-Match": etag or f'W/"{version}"'}
        return {}

    async def _decide_effect(
        self, ctx: RequestContext, writes: list[tuple[FhirRequest, dict[str, Any]]]
    ) -> None:
        """A write is judged by what it produces, not only by its URL (security review).

        A JSON Patch can re-point `subject` (or `copy` `focus` into it) and move a record into another
        patient's chart; an update (also inside a batch or transaction) can drop the labels that
        restrict it. Each write's result is worked out against the version just read; the patients of
        the results join the targets and the request is decided again, with the labels the writes
        would remove (only records officers may lower a record's sensitivity, I.3).
        """
        assert self.gw is not None
        added: set[str] = set()
        removed: set[str] = set()
        for target, current in writes:
            result = write_result(target, current)
            new = resource_patients(result) - set(target.all_patients())
            target.patients |= new
            added |= new
            removed |= labels(current, self.label_systems) - labels(result, self.label_systems)
        if not added and not removed:
            return
        ctx.audit_extra["write_effect"] = {"patients_added": sorted(added), "labels_removed": sorted(removed)}
        await self.gw.hooks.before_decision(ctx)  # facts about the patients the writes now reach
        again = ctx.decision_input(utc_now())
        again["target"]["labels_removed"] = sorted(removed)
        decision = await request_decision(self.gw, ctx, again)
        if not decision.allow:
            ctx.decision, ctx.reasons = "deny", decision.reasons
            raise GatewayError(403, "forbidden", shown(decision.reasons))

    async def after_upstream(self, ctx: RequestContext, upstream: UpstreamResponse) -> None:
        """Who changed what (I.3, II.2): the version a write produced, beside the version it replaced."""
        if ctx.fhir is None or not ctx.fhir.is_write:
            return
        after: list[str | None] = []
        body = upstream.body if isinstance(upstream.body, dict) else {}
        if body.get("resourceType") == "Bundle" and body.get("type") in (
            "batch-response",
            "transaction-response",
        ):
            for entry in body.get("entry") or []:
                etag = ((entry or {}).get("response") or {}).get("etag")
                after.append(etag.removeprefix("W/").strip('"') if isinstance(etag, str) else None)
        else:
            version = (body.get("meta") or {}).get("versionId") if body else None
            etag = upstream.headers.get("ETag")
            after.append(version or (etag.removeprefix("W/").strip('"') if etag else None))
        ctx.audit_extra["versions_after"] = after


PLUGIN = WriteGuardPlugin
