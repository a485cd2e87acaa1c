"""Resources about other resources (issue "nothing leaks", class 10): which of their references
name the records they describe — a Provenance's target, a List's items, an Encounter's diagnoses.
Such a resource is judged with what it points to (gateway/decide.py): their patients join its own,
and a reference to a record the operator may not see is not disclosed.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.fhir.resource_types import RESOURCE_TYPES

__all__ = ["ABOUT_ELEMENTS", "about_references", "local_about_references"]

#: Resources whose purpose is to describe other resources, and the elements that say which: such a
#: resource discloses what it is about, so it is judged with it (issue "nothing leaks", class 10).
ABOUT_ELEMENTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "Provenance": (("target",), ("entity", "what")),
    "AuditEvent": (("entity", "what"),),
    "List": (("entry", "item"),),
    "Composition": (("section", "entry"), ("section", "section", "entry")),
    "DocumentReference": (("context", "related"),),
    "DocumentManifest": (("content",), ("related", "ref")),
    "Linkage": (("item", "resource"),),
    "Consent": (("provision", "data", "reference"),),
    "DetectedIssue": (("implicated",),),
    "Communication": (("about",),),
    "CommunicationRequest": (("about",),),
    "Task": (("focus",),),
    "MeasureReport": (("evaluatedResource",),),
    "ClinicalImpression": (("investigation", "item"), ("finding", "itemReference")),
    # A diagnosis or reason is a reference to another record, often with its text as `display`
    # ("Human immunodeficiency virus [HIV] disease", red team): judged with what it points to.
    "Encounter": (("diagnosis", "condition"), ("reasonReference",)),
    "EpisodeOfCare": (("diagnosis", "condition"),),
    "MedicationRequest": (("reasonReference",),),
    "MedicationStatement": (("reasonReference",),),
    "MedicationAdministration": (("reasonReference",),),
    "Procedure": (("reasonReference",),),
    "ServiceRequest": (("reasonReference",),),
    "CarePlan": (("addresses",),),
    "Goal": (("addresses",),),
    "Claim": (("diagnosis", "diagnosisReference"),),
    # A panel's members and what a result derives from are records of their own (red team: a
    # visible panel named the ids of withheld members).
    "Observation": (("hasMember",), ("derivedFrom",)),
    "DiagnosticReport": (("result",),),
}
_LITERAL = re.compile(
    r"^(?:[a-z][a-z0-9+.-]*://[^?#]*/)?([a-z]+)/([a-z0-9\-.]{1,64})(?:/_history/[^/]+)?$", re.IGNORECASE
)
# The type of a literal reference in any letter case (`condition/x`), as the type it names.
_TYPES = {t.lower(): t for t in RESOURCE_TYPES}


def _at(node: Any, path: tuple[str, ...]) -> list[Any]:
    if not path:
        return node if isinstance(node, list) else [node]
    items = node if isinstance(node, list) else [node]
    return [v for item in items if isinstance(item, dict) for v in _at(item.get(path[0]), path[1:])]


def about_references(resource: dict[str, Any]) -> list[str]:
    """The records ("Type/id") a describing resource is about, patients aside (they are its own)."""
    found: list[str] = []
    for path in ABOUT_ELEMENTS.get(str(resource.get("resourceType")), ()):
        for ref in _at(resource, path):
            value = ref.get("reference") if isinstance(ref, dict) else None
            match = _LITERAL.match(value) if isinstance(value, str) else None
            rtype = _TYPES.get(match[1].lower()) if match else None
            if match and rtype and rtype != "Patient" and f"{rtype}/{match[2]}" not in found:
                found.append(f"{rtype}/{match[2]}")
    return found


def local_about_references(resource: dict[str, Any]) -> list[str]:
    """The records it describes that sit in the same answer: `#id` (contained) and `urn:…`
    (another entry of its Bundle) — judged with it too (property tests: a Provenance about a
    withheld `urn:uuid:` entry was released)."""
    found: list[str] = []
    for path in ABOUT_ELEMENTS.get(str(resource.get("resourceType")), ()):
        for ref in _at(resource, path):
            value = ref.get("reference") if isinstance(ref, dict) else None
            if isinstance(value, str) and (value.startswith("#") or value.lower().startswith("urn:")):
                if value not in found:
                    found.append(value)
    return found
