"""Find every resource in a FHIR response, summarise it for the response decision, apply verdicts.

"Filter what comes back, not only what was asked" (DESIGN.md): search pages, `_include`d and
`_revinclude`d entries, history, `$everything`, contained resources, Parameters outputs and
batch/transaction responses are all walked the same way, so a request that was rewritten to look
harmless cannot carry a resource past the filter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Elements that point at the patient a resource is about (Patient compartment, most used ones).
PATIENT_ELEMENTS = ("subject", "patient", "beneficiary")
# Bundles the server generates to carry answers: only their contents are judged. Any other Bundle
# (a stored document, message or collection) is a resource of its own with its own labels, and is
# judged as one (its verdict covers everything inside) as well as entry by entry.
RESPONSE_BUNDLE_TYPES = frozenset({"searchset", "history", "batch-response", "transaction-response"})
REDACTED_LABEL = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "REDACTED",
    "display": "redacted",
}


# Stands for a patient the gateway cannot name (a logical reference by identifier, a malformed id):
# no department, no care team, so every care-bound role is refused (fail closed).
UNRESOLVED_PATIENT = "Patient/unresolved-reference"
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def reference_patient(ref: Any) -> str | None:
    """'Patient/x' from a Reference (relative, absolute, versioned, with a fragment), else None.

    The type is matched case-insensitively: a server that resolves ``patient/x`` must not give the
    gateway a reason to think no patient is involved.
    """
    if not isinstance(ref, dict):
        return None
    value = ref.get("reference")
    if not isinstance(value, str):
        return None
    parts = [p for p in value.split("#", 1)[0].split("/") if p]
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    for i in range(len(parts) - 2, -1, -1):
        if parts[i].lower() == "patient":
            pid = parts[i + 1]
            return f"Patient/{pid}" if _ID.match(pid) and pid not in (".", "..") else UNRESOLVED_PATIENT
    return None


def _walk_refs(node: Any, found: set[str], patient_element: bool) -> None:
    if isinstance(node, dict):
        patient = reference_patient(node)
        if patient:
            found.add(patient)
        elif patient_element and "reference" not in node and isinstance(node.get("identifier"), dict):
            found.add(UNRESOLVED_PATIENT)  # subject: {identifier: MRN} names a patient we cannot check
        for key, value in node.items():
            if key not in ("contained", "meta"):  # contained resources are judged on their own
                _walk_refs(value, found, key in PATIENT_ELEMENTS)
    elif isinstance(node, list):
        for item in node:
            _walk_refs(item, found, patient_element)


def resource_patients(resource: dict[str, Any]) -> set[str]:
    """Every patient a resource is about: itself if a Patient, and every patient it references
    anywhere (subject, patient, but also Appointment.participant.actor, Observation.focus,
    Provenance.target, Group.member ...): sealing and the care relationship hold by every link."""
    found: set[str] = set()
    if resource.get("resourceType") == "Patient" and isinstance(resource.get("id"), str):
        found.add(f"Patient/{resource['id']}")
    for key, value in resource.items():
        if key not in ("contained", "meta", "id", "resourceType"):
            _walk_refs(value, found, key in PATIENT_ELEMENTS)
    return found


def _codings(value: Any) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for item in value if isinstance(value, list) else [value]:
        if not isinstance(item, dict):
            continue
        codings = item.get("coding") if "coding" in item else [item]
        for c in codings or []:
            if isinstance(c, dict) and isinstance(c.get("code"), str):
                out.append({"system": str(c.get("system", "")), "code": c["code"]})
    return out


def all_codings(resource: dict[str, Any]) -> list[dict[str, str]]:
    """Every Coding anywhere in a resource (not its meta, not contained resources): a diagnosis can
    sit in code, conclusionCode, evidence.code, component.code, diagnosis.diagnosisCodeableConcept ...
    and the grade must see it wherever it is (security review #4)."""
    found: dict[tuple[str, str], None] = {}

    def walk(node: Any, in_coding: bool = False) -> None:
        if isinstance(node, dict):
            # A Quantity (value + unit code) is a measurement, not a classification: not graded.
            if (
                isinstance(node.get("code"), str)
                and (in_coding or isinstance(node.get("system"), str))
                and "value" not in node
            ):
                found[(str(node.get("system", "")), node["code"])] = None
            for key, value in node.items():
                if key not in ("meta", "contained"):
                    walk(value, key == "coding")
        elif isinstance(node, list):
            for item in node:
                walk(item, in_coding)

    walk({k: v for k, v in resource.items() if k not in ("meta", "contained")})
    return [{"system": s, "code": c} for s, c in found]


@dataclass
class Slot:
    """Where one resource sits in the response, so its verdict can be applied in place."""

    resource: dict[str, Any]
    kind: str  # root | entry | contained | parameter
    path: str
    container: list[Any] | None = None  # the list that holds it (entry, contained, parameter)
    index: int = 0
    entry: dict[str, Any] | None = None  # its Bundle entry
    bundle: dict[str, Any] | None = None  # the Bundle it is in

    def summary(self) -> dict[str, Any]:
        r = self.resource
        meta: dict[str, Any] = r["meta"] if isinstance(r.get("meta"), dict) else {}
        patients = sorted(resource_patients(r))
        codes = all_codings(r)
        search = (self.entry or {}).get("search") or {}
        return {
            "type": r.get("resourceType"),
            "id": r.get("id"),
            "patient": patients[0] if patients else None,
            "patients": patients,
            "security": _codings(meta.get("security")),
            "tags": _codings(meta.get("tag")),
            "codes": codes,
            "kind": self.kind,
            "path": self.path,
            "search_mode": search.get("mode"),
            "bundle_type": (self.bundle or {}).get("type"),
        }


def collect(body: Any) -> list[Slot]:
    """Every resource in a response body, parents before their children."""
    slots: list[Slot] = []
    if isinstance(body, dict) and isinstance(body.get("resourceType"), str):
        _walk(body, Slot(body, "root", ""), slots)
    return slots


def _walk(resource: dict[str, Any], slot: Slot, slots: list[Slot]) -> None:
    rtype = resource.get("resourceType")
    carrier = rtype == "Parameters" or (rtype == "Bundle" and resource.get("type") in RESPONSE_BUNDLE_TYPES)
    if not carrier and rtype != "OperationOutcome":
        slots.append(slot)
    prefix = f"{slot.path}." if slot.path else ""
    contained = resource.get("contained")
    if isinstance(contained, list):
        for i, child in enumerate(contained):
            if isinstance(child, dict):
                _walk(
                    child,
                    Slot(
                        child, "contained", f"{prefix}contained[{i}]", contained, i, slot.entry, slot.bundle
                    ),
                    slots,
                )
    if rtype == "Bundle" and isinstance(resource.get("entry"), list):
        entries = resource["entry"]
        for i, entry in enumerate(entries):
            child = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(child, dict):
                _walk(
                    child,
                    Slot(child, "entry", f"{prefix}entry[{i}].resource", entries, i, entry, resource),
                    slots,
                )
    if rtype == "Parameters":
        _walk_parameters(resource.get("parameter"), prefix + "parameter", slots)


def _walk_parameters(params: Any, path: str, slots: list[Slot]) -> None:
    if not isinstance(params, list):
        return
    for i, p in enumerate(params):
        if not isinstance(p, dict):
            continue
        child = p.get("resource")
        if isinstance(child, dict):
            _walk(child, Slot(child, "parameter", f"{path}[{i}].resource", params, i), slots)
        _walk_parameters(p.get("part"), f"{path}[{i}].part", slots)


def remove_path(resource: dict[str, Any], path: str) -> bool:
    """Remove a dotted element path (``name``, ``subject.display``, ``contact.telecom``)."""
    head, _, rest = path.partition(".")
    if head not in resource:
        return False
    if not rest:
        del resource[head]
        return True
    value = resource[head]
    removed = False
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dict):
            removed = remove_path(item, rest) or removed
    return removed


def mark_redacted(resource: dict[str, Any]) -> None:
    """Label a resource so the client knows fields were withheld (HL7 v3 ObservationValue REDACTED)."""
    meta = resource.setdefault("meta", {})
    security = meta.setdefault("security", [])
    if not any(isinstance(s, dict) and s.get("code") == "REDACTED" for s in security):
        security.append(dict(REDACTED_LABEL))
