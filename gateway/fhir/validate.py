"""Write bodies are validated before they reach the EMR (I.3: governed create/modify workflows).

fhir.resources ships R4B models, not R4 (the package has no R4); R4B is R4 plus a few resources, so
a valid R4 body validates, and an R4-only type (MedicinalProduct*) is reported as unknown.
Validation costs 240-410 us per resource, so only request bodies are validated, never responses.
"""

from __future__ import annotations

import re
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from gateway import rules
from gateway.errors import GatewayError, Reason
from gateway.fhir.request import FhirRequest

MAX_PROBLEMS = 20
JSON_PATCH_OPS = frozenset({"add", "remove", "replace", "move", "copy", "test"})
#: A conditional reference (FHIR transaction rules): `Patient?identifier=…`, relative or absolute.
CONDITIONAL_REFERENCE_RE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://[^?]*/)?[A-Z][A-Za-z]+\?", re.IGNORECASE)


def conditional_references(node: Any, where: str) -> list[str]:
    """Where a body references a record by search instead of by id.

    A server that resolves it (HAPI does, in transactions) files the record into whichever chart the
    search finds — one the policy never saw, since only the ids a body names are decided on (I.3, I.4).
    """
    found: list[str] = []
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and CONDITIONAL_REFERENCE_RE.match(ref):
            found.append(f"{where}.reference")
        for key, value in node.items():
            found += conditional_references(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += conditional_references(value, f"{where}[{i}]")
    return found


def _problems(resource: Any, where: str) -> list[str]:
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return [f"{where}: not a FHIR resource"]
    try:
        model = get_fhir_model_class(resource["resourceType"])
    except (ValueError, KeyError):
        return [f"{where}: unknown resourceType '{resource['resourceType']}'"]
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        return [
            f"{where}{'.' if e['loc'] else ''}{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors()[:MAX_PROBLEMS]
        ]
    return []


def _json_patch_problems(body: Any) -> list[str]:
    if not isinstance(body, list):
        return ["JSON Patch body must be an array of operations"]
    problems = []
    for i, op in enumerate(body):
        if (
            not isinstance(op, dict)
            or op.get("op") not in JSON_PATCH_OPS
            or not isinstance(op.get("path"), str)
        ):
            problems.append(f"patch[{i}]: needs 'op' (one of {sorted(JSON_PATCH_OPS)}) and 'path'")
    return problems


def validate_write(req: FhirRequest, content_type: str) -> None:
    """Raise 400 with every problem found (up to MAX_PROBLEMS) if a write body is not valid FHIR."""
    problems: list[str] = []
    if req.interaction in ("create", "update"):
        problems = _problems(req.body, req.resource_type or "resource")
    elif req.interaction == "patch":
        if "json-patch" not in content_type:
            # A FHIRPath Patch cannot be applied here to see what it would produce: refused.
            raise GatewayError(
                415,
                "not-supported",
                [
                    Reason(
                        rules.PATCH_FORMAT,
                        "only JSON Patch (application/json-patch+json) is accepted for PATCH",
                        "PATCH 仅接受 JSON Patch(application/json-patch+json)",
                        "I.3",
                    )
                ],
            )
        problems = _json_patch_problems(req.body)
    elif req.interaction in ("batch", "transaction"):
        for i, entry in enumerate(req.entries):
            if entry.interaction == "patch":
                # What a patch in a batch produces is not checked here (it could move a record into
                # another patient's chart): send it on its own, where it is applied and judged.
                raise GatewayError(
                    400,
                    "not-supported",
                    [
                        Reason(
                            rules.PATCH_IN_BUNDLE,
                            f"Bundle.entry[{i}]: PATCH inside a batch/transaction is not accepted; send it alone",
                            f"Bundle.entry[{i}]:批处理中不接受 PATCH,请单独发送",
                            "I.3",
                        )
                    ],
                )
            if entry.interaction in ("create", "update"):
                problems += _problems(entry.body, f"Bundle.entry[{i}].resource")
    bodies = [(req.body, req.resource_type or "resource")] if req.interaction in ("create", "update") else []
    bodies += [
        (e.body, f"Bundle.entry[{i}].resource")
        for i, e in enumerate(req.entries)
        if e.interaction in ("create", "update")
    ]
    conditional = [where for body, at in bodies for where in conditional_references(body, at)]
    if conditional:
        raise GatewayError(
            400,
            "not-supported",
            [
                Reason(
                    rules.CONDITIONAL_REFERENCE,
                    f"{where}: a reference by search is not accepted; reference the record by its id",
                    f"{where}:不接受按查询条件的引用,请按 id 引用记录",
                    "I.3",
                )
                for where in conditional[:MAX_PROBLEMS]
            ],
        )
    if problems:
        problems = problems[:MAX_PROBLEMS]
        raise GatewayError(
            400,
            "invalid",
            [
                Reason(rules.INVALID_RESOURCE, f"invalid FHIR resource: {p}", f"FHIR 资源不合规:{p}", "I.3")
                for p in problems
            ],
        )
