"""``/admin/grants``: time-bound permissions (II.1) — create, list (the periodic permission review),
read, revoke. Every call is audited by the common admin path (gateway/admin.py).
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from gateway.admin import (
    ADMIN_PREFIX,
    MAX_REASON,
    Call,
    FieldError,
    flag,
    json_body,
    string_list,
    text_field,
    time_field,
    unknown_fields,
)
from gateway.audited import Reply
from gateway.context import RequestContext
from gateway.errors import error
from gateway.fhir.resource_types import RESOURCE_TYPES
from gateway.hooks import AdminRoute
from gateway.runtime import Gateway
from gateway.store import StoreNotFound
from plugins.grants.store import GRANT_KINDS, GrantStore

PURPOSE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,31}$")  # as plugins/purpose/hook.py
GRANT_ID_RE = re.compile(r"^[0-9a-f]{32}$")
GRANT_SELF = "grant.self"
#: The interactions gateway/fhir/request.py produces: what a grant's scope may name.
INTERACTIONS = frozenset(
    {
        "read",
        "vread",
        "update",
        "patch",
        "delete",
        "history-instance",
        "history-type",
        "history-system",
        "create",
        "search-type",
        "search-system",
        "capabilities",
        "batch",
        "transaction",
        "operation",
        "graphql",
    }
)
GRANT_FIELDS = frozenset(
    {"kind", "operator", "dept", "purposes", "start", "end", "scope", "agreement", "supervisor"}
)
SCOPE_FIELDS = frozenset({"types", "fields", "interactions"})


def validate_grant(body: Any) -> dict[str, Any]:
    """A grant as the store takes it, or FieldError naming the first wrong field (II.1)."""
    if not isinstance(body, dict):
        raise FieldError("", "the body must be a JSON object", "请求体必须是 JSON 对象", "II.1")
    unknown_fields(body, GRANT_FIELDS, "II.1")
    kind = body.get("kind")
    if kind not in GRANT_KINDS:
        raise FieldError(
            "kind",
            f"'kind' must be one of {', '.join(GRANT_KINDS)}",
            f"“kind”必须是 {'、'.join(GRANT_KINDS)} 之一",
            "II.1",
        )
    operator = text_field(body, "operator", "II.1", required=True)
    # Trainees are limited to their rotation's department and duration (II.1).
    dept = text_field(body, "dept", "II.1", required=kind == "rotation")
    purposes = body.get("purposes")
    if not isinstance(purposes, list) or not purposes:
        raise FieldError(
            "purposes",
            "'purposes' must be a non-empty list of PurposeOfUse codes (e.g. TREAT, HRESCH)",
            "“purposes”必须是非空的使用目的代码列表(如 TREAT、HRESCH)",
            "II.1",
        )
    if not all(isinstance(p, str) and PURPOSE_RE.fullmatch(p) for p in purposes):
        raise FieldError(
            "purposes",
            "'purposes' must hold PurposeOfUse codes (e.g. TREAT, HRESCH)",
            "“purposes”只能包含使用目的代码(如 TREAT、HRESCH)",
            "II.1",
        )
    start, end = time_field(body, "start", "II.1"), time_field(body, "end", "II.1")
    if not start < end:
        raise FieldError("end", "'end' must be after 'start'", "“end”必须晚于“start”", "II.1")
    scope = body.get("scope", {})
    if not isinstance(scope, dict):
        raise FieldError("scope", "'scope' must be a JSON object", "“scope”必须是 JSON 对象", "II.1")
    unknown_fields(scope, SCOPE_FIELDS, "II.1", "scope.")
    clean_scope: dict[str, Any] = {}
    if "types" in scope:
        clean_scope["types"] = string_list(scope["types"], "scope.types", "II.1", allowed=RESOURCE_TYPES)
    if "interactions" in scope:
        clean_scope["interactions"] = string_list(
            scope["interactions"], "scope.interactions", "II.1", allowed=INTERACTIONS
        )
    if "fields" in scope:
        fields = scope["fields"]
        if not isinstance(fields, dict):
            raise FieldError(
                "scope.fields",
                "'scope.fields' must map resource types to lists of element names",
                "“scope.fields”必须是资源类型到字段名列表的映射",
                "II.1",
            )
        clean_fields: dict[str, list[str]] = {}
        for rtype, names in fields.items():
            key = f"scope.fields.{rtype}"
            if rtype not in RESOURCE_TYPES or ("types" in clean_scope and rtype not in clean_scope["types"]):
                raise FieldError(
                    key,
                    f"'{key}': '{rtype[:64]}' is not one of the scope's resource types",
                    f"“{key}”:“{rtype[:64]}”不是授权范围内的资源类型",
                    "II.1",
                )
            clean_fields[rtype] = string_list(names, key, "II.1")
        clean_scope["fields"] = clean_fields
    agreement = text_field(body, "agreement", "II.1", required=kind == "vendor")
    supervisor = text_field(body, "supervisor", "II.1", required=kind == "vendor")
    if kind == "vendor":
        # External service providers: scope, purpose and duration fixed by agreement (II.1).
        for key in ("types", "interactions"):
            if not clean_scope.get(key):
                raise FieldError(
                    f"scope.{key}",
                    f"a vendor grant needs a non-empty 'scope.{key}' (II.1: the agreement fixes the scope)",
                    f"外部服务商授权必须填写非空的“scope.{key}”(协议须明确访问范围)",
                    "II.1",
                )
    return {
        "kind": kind,
        "operator": operator,
        "dept": dept,
        "purposes": list(dict.fromkeys(p.upper() for p in purposes)),
        "start": body["start"],  # exactly as given: a grant never outlasts what was approved
        "end": body["end"],
        "scope": clean_scope,
        "agreement": agreement,
        "supervisor": supervisor,
    }


def _grant_id(request: web.Request) -> str:
    grant_id = request.match_info["id"]
    if not GRANT_ID_RE.fullmatch(grant_id):
        raise StoreNotFound(f"no grant with id '{grant_id[:64]}'")
    return grant_id


async def create_grant(request: web.Request, ctx: RequestContext, gw: Gateway, call: Call) -> Reply:
    """POST /admin/grants: a time-bound permission for one operator (II.1)."""
    grant = validate_grant(await json_body(request, "II.1"))
    call.target.update(grant_operator=grant["operator"], kind=grant["kind"])
    assert ctx.operator is not None
    if grant["operator"] == ctx.operator.id:
        # II.1: permissions are given by the institution, not taken; nobody grants themselves.
        raise error(
            status=403,
            code="forbidden",
            rule=GRANT_SELF,
            en="an operator cannot grant access to their own account",
            zh="操作人员不得为本人账号授权",
            clause="II.1",
        )
    created = await GrantStore(gw.store).create_grant(grant, by=ctx.operator.id)
    call.target["grant_id"] = created["id"]
    call.target.update(start=created["start"], end=created["end"])
    return Reply(201, created, {"Location": f"{ADMIN_PREFIX}/grants/{created['id']}"})


async def list_grants(request: web.Request, ctx: RequestContext, gw: Gateway, call: Call) -> Reply:
    """GET /admin/grants?operator=&include_revoked=: the periodic permission review (II.1)."""
    operator = request.query.get("operator") or None
    include_revoked = flag(request, "include_revoked")
    if operator:
        call.target["grant_operator"] = operator
    grants = await GrantStore(gw.store).list_grants(operator, include_revoked=include_revoked)
    return Reply(200, {"grants": grants})


async def get_grant(request: web.Request, ctx: RequestContext, gw: Gateway, call: Call) -> Reply:
    """GET /admin/grants/{id}."""
    grant_id = request.match_info["id"]
    call.target["grant_id"] = grant_id[:64]
    grant = await GrantStore(gw.store).get_grant(_grant_id(request))
    if grant is None:
        raise StoreNotFound(f"no grant with id '{grant_id}'")
    return Reply(200, grant)


async def revoke_grant(request: web.Request, ctx: RequestContext, gw: Gateway, call: Call) -> Reply:
    """POST /admin/grants/{id}/revoke {"reason"}: ends a grant now (II.1)."""
    call.target["grant_id"] = request.match_info["id"][:64]
    body = await json_body(request, "II.1")
    unknown_fields(body, frozenset({"reason"}), "II.1")
    reason = text_field(body, "reason", "II.1", required=True, limit=MAX_REASON)
    call.target["reason"] = reason
    assert ctx.operator is not None and reason is not None
    revoked = await GrantStore(gw.store).revoke_grant(_grant_id(request), by=ctx.operator.id, reason=reason)
    call.target["grant_operator"] = revoked["operator"]
    return Reply(200, revoked)


def _roles(settings: Any) -> tuple[str, ...]:
    return settings.admin_grant_roles


ROUTES = [
    AdminRoute("POST", "/grants", "admin.grant.create", "II.1", _roles, create_grant),
    AdminRoute("GET", "/grants", "admin.grants.list", "II.1", _roles, list_grants),
    AdminRoute("GET", "/grants/{id}", "admin.grant.read", "II.1", _roles, get_grant),
    AdminRoute("POST", "/grants/{id}/revoke", "admin.grant.revoke", "II.1", _roles, revoke_grant),
]
