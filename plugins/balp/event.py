"""Audit records as FHIR AuditEvents after IHE Basic Audit Log Patterns (BALP), so a hospital's
audit repository or a regulator's tools (III) read them without mapping work.

Read/Query/Create/Update/Delete and their patient-specific forms; agents are the operator (the
requestor, with purpose of use) and the gateway; entities are the patients and the resources; a
search keeps its query. Validated against the R4B AuditEvent model in the tests.
"""

from __future__ import annotations

import base64
from typing import Any

BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
OBJECT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
PURPOSE = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
OPERATOR_SYSTEM = "https://emrguard.example/fhir/sid/operator"

# interaction -> (BALP profile stem, AuditEvent.action, restful-interaction code)
KINDS: dict[str, tuple[str, str, str]] = {
    "read": ("Read", "R", "read"),
    "vread": ("Read", "R", "vread"),
    "search-type": ("Query", "E", "search-type"),
    "search-system": ("Query", "E", "search-system"),
    "history-instance": ("Query", "E", "history-instance"),
    "history-type": ("Query", "E", "history-type"),
    "history-system": ("Query", "E", "history-system"),
    "create": ("Create", "C", "create"),
    "update": ("Update", "U", "update"),
    "patch": ("Update", "U", "patch"),
    "delete": ("Delete", "D", "delete"),
    "operation": ("Query", "E", "operation"),
    "batch": ("Query", "E", "batch"),
    "transaction": ("Update", "E", "transaction"),
    "capabilities": ("Read", "R", "capabilities"),
}


def _outcome(status: int) -> str:
    return "0" if status < 400 else ("4" if status < 500 else "8")


def to_audit_event(record: dict[str, Any]) -> dict[str, Any]:
    interaction = record.get("interaction") or "read"
    stem, action, rest_code = KINDS.get(interaction, ("Query", "E", "operation"))
    patients = sorted(
        set(record.get("patients_disclosed") or []) | set(record.get("patients_targeted") or [])
    )
    profile = f"{BALP}IHE.BasicAudit.{'Patient' if patients else ''}{stem}"
    status = int(record.get("status") or 0)
    reasons = record.get("reasons") or []
    user: dict[str, Any] = {
        "type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
        "who": {
            "identifier": {"system": OPERATOR_SYSTEM, "value": record.get("operator") or "anonymous"},
            "display": record.get("operator_name") or record.get("operator") or "anonymous",
        },
        "requestor": True,
        "network": {"address": record.get("client_address") or "unknown", "type": "2"},
    }
    if record.get("roles"):
        user["role"] = [
            {"coding": [{"system": "https://emrguard.example/fhir/CodeSystem/role", "code": r}]}
            for r in record["roles"]
        ]
    if record.get("purpose"):
        user["purposeOfUse"] = [{"coding": [{"system": PURPOSE, "code": record["purpose"]}]}]
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": record["request_id"],
        "meta": {"profile": [profile]},
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "Restful Operation",
        },
        "subtype": [{"system": INTERACTION, "code": rest_code}],
        "action": action,
        "recorded": record["time"],
        "outcome": _outcome(status),
        "agent": [
            user,
            {
                "type": {"coding": [{"system": DCM, "code": "110152", "display": "Destination Role ID"}]},
                "who": {"display": "EMR Guard gateway"},
                "requestor": False,
            },
        ],
        "source": {
            "observer": {"display": "EMR Guard"},
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                    "display": "Application Server",
                }
            ],
        },
        "entity": [],
    }
    if reasons:
        event["outcomeDesc"] = "; ".join(
            f"{r.get('rule')} [{r.get('clause') or '-'}] {r.get('en')}" for r in reasons
        )[:1000]
    if record.get("purpose"):
        event["purposeOfEvent"] = [{"coding": [{"system": PURPOSE, "code": record["purpose"]}]}]
    for p in patients:
        event["entity"].append(
            {
                "what": {"reference": p},
                "type": {"system": OBJECT_TYPE, "code": "1", "display": "Person"},
                "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
            }
        )
    for ref in (record.get("resources_disclosed") or [])[:200]:
        if "/" in ref:
            event["entity"].append(
                {
                    "what": {"reference": ref},
                    "type": {"system": OBJECT_TYPE, "code": "2", "display": "System Object"},
                }
            )
    if stem == "Query":
        query = f"{record.get('path') or ''}?{record.get('query') or ''}"
        event["entity"].append(
            {
                "type": {"system": OBJECT_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
                "query": base64.b64encode(query.encode()).decode(),
            }
        )
    if not event["entity"]:
        del event["entity"]
    return event
