"""Field-level minimum necessary (I.4): what the response filter does to a kept resource.

The policy names the operations (opa_policies/README.md, verdict ``transform``); this module
carries them out without breaking FHIR validity: where an element the resource cannot be valid
without is withheld, a ``data-absent-reason`` of ``masked`` stands in its place. Research
pseudonyms (verdict ``pseudonymise``) are gateway/fhir/pseudonyms.py.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from gateway.fhir.resource_types import RESOURCE_TYPES
from gateway.policy.decisions import Transform

DATA_ABSENT_REASON = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
MASKED = {"extension": [{"url": DATA_ABSENT_REASON, "valueCode": "masked"}]}
ALWAYS_KEPT = frozenset({"resourceType", "id", "meta"})


@lru_cache(maxsize=256)
def required_elements(resource_type: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(required complex elements, required primitive elements) of a type, from the R4B models."""
    try:
        model = get_fhir_model_class(resource_type)
    except (ValueError, KeyError):
        return (), ()
    complex_ = tuple(f.alias or n for n, f in model.model_fields.items() if f.is_required())
    try:
        primitive = tuple(name for name, _ in model.get_required_fields(model.model_construct()))
    except Exception:  # a model without primitive requirements
        primitive = ()
    return complex_, primitive


def mask_required(resource: dict[str, Any]) -> None:
    """Put data-absent-reason where a required element is missing (it was withheld)."""
    complex_, primitive = required_elements(str(resource.get("resourceType")))
    for name in complex_:
        if name not in resource:
            resource[name] = dict(MASKED)
    for name in primitive:
        if name not in resource and f"_{name}" not in resource:
            resource[f"_{name}"] = dict(MASKED)


def keep_only(resource: dict[str, Any], fields: list[str]) -> None:
    """Vendors see only the elements their agreement names (II.1)."""
    allowed = ALWAYS_KEPT | set(fields)
    for name in [n for n in resource if n.lstrip("_") not in allowed]:
        del resource[name]


def year_of(resource: dict[str, Any], path: str) -> None:
    """A date reduced to its year ("1955-03-19" -> "1955"), a valid FHIR date."""
    value = resource.get(path)
    if isinstance(value, str) and len(value) >= 4:
        resource[path] = value[:4]


#: The keys a Reference that is only a display may carry (a Coding has a code or system besides).
DISPLAY_ONLY_REFERENCE = frozenset({"display", "type", "id", "extension"})


def walk_references(node: Any, visit: Callable[[dict[str, Any]], None]) -> None:
    """Call ``visit`` on every Reference inside a resource (also a logical one, by identifier only,
    and one that is a display alone: `subject: {display: "洪玉英 MRN000003"}` names a person too)."""
    if isinstance(node, dict):
        if (
            isinstance(node.get("reference"), str)
            or (
                isinstance(node.get("identifier"), dict)
                and ("display" in node or "type" in node or len(node) == 1)
            )
            or (isinstance(node.get("display"), str) and set(node) <= DISPLAY_ONLY_REFERENCE)
        ):
            visit(node)
        for key, value in node.items():
            if key != "contained":  # contained resources are judged on their own
                walk_references(value, visit)
    elif isinstance(node, list):
        for item in node:
            walk_references(item, visit)


def drop_reference_display(resource: dict[str, Any]) -> None:
    """Reference.display often spells the patient's or doctor's name."""
    walk_references(resource, lambda ref: ref.pop("display", None))


def apply_transforms(resource: dict[str, Any], ops: list[Transform]) -> bool:
    """Carry out the verdict's ``transform`` operations; True if any was applied."""
    for op in ops:
        kind = op.get("op")
        if kind == "year":
            year_of(resource, str(op.get("path")))
        elif kind == "drop_reference_display":
            drop_reference_display(resource)
        elif kind == "keep_only":
            keep_only(resource, [str(f) for f in op.get("fields") or []])
        else:
            # A withholding the gateway does not know how to do must not be skipped silently.
            raise ValueError(f"unknown transform {kind!r}")
    return bool(ops)


def __getattr__(name: str) -> Any:
    """``Pseudonymiser`` moved to gateway/fhir/pseudonyms.py; modules that still import it from here
    get it from there (imported on use: pseudonyms imports this module)."""
    if name == "Pseudonymiser":
        from gateway.fhir.pseudonyms import Pseudonymiser

        return Pseudonymiser
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: References whose `display` stays: the patient (a kept record's patient is one the operator may
#: see), and the people, places and things care is given by. Any other record's display is a copy
#: of that record's content ("Human immunodeficiency virus [HIV] disease") the gateway has not
#: judged, so it is dropped (red team: an Encounter's `evidence.detail` named a withheld diagnosis).
DISPLAY_KEPT_TYPES = frozenset(
    {
        "Patient", "Practitioner", "PractitionerRole", "Organization", "Location", "HealthcareService",
        "Device", "Medication", "Substance", "Endpoint", "RelatedPerson", "CareTeam",
    }
)  # fmt: skip


def drop_record_displays(resource: dict[str, Any]) -> None:
    def visit(ref: dict[str, Any]) -> None:
        value = ref.get("reference")
        if not isinstance(value, str) or "display" not in ref:
            return
        parts = [p for p in value.split("/_history/", 1)[0].split("/") if p]
        if len(parts) >= 2 and parts[-2] in RESOURCE_TYPES and parts[-2] not in DISPLAY_KEPT_TYPES:
            ref.pop("display", None)

    walk_references(resource, visit)
