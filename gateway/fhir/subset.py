"""`_summary` and `_elements`, applied by the gateway after the filter (I.4).

They are never forwarded (gateway/pipeline.py ``NOT_FORWARDED``): a server that leaves out what the
response decision grades on (`_elements=id` strips labels and codes; HAPI's `_summary=text` drops
`Condition.code`) would have an HIV diagnosis graded as harmless. So the gateway asks for whole
resources, judges and filters them, and only then cuts each released match down to what the client
asked for, the way FHIR defines it: `_elements` keeps the named top-level elements plus the
mandatory ones; `_summary=true` the elements FHIR marks as summary; `text` the narrative, id and
meta; `data` all but the narrative. The resource is tagged ``SUBSETTED``. The summary and mandatory
flags come from the fhir.resources models (R4B, whose summary flags equal R4's for these elements).
Included resources (`search.mode = include`) are not cut, as FHIR says.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "subsetted",
}
ALWAYS = frozenset({"resourceType", "id", "meta"})
SUMMARY_MODES = frozenset({"true", "text", "data"})


@cache
def _flags(resource_type: str) -> tuple[frozenset[str], frozenset[str]]:
    """(summary elements, mandatory elements) of a resource type, by their JSON names."""
    try:
        model = get_fhir_model_class(resource_type)
    except (KeyError, ValueError):
        return frozenset(), frozenset()
    summary, required = set(), set()
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if not extra.get("element_property"):
            continue
        json_name = field.alias or name
        if extra.get("summary_element_property"):
            summary.add(json_name)
        if field.is_required() or extra.get("element_required") or extra.get("one_of_many_required"):
            required.add(json_name)
    return frozenset(summary), frozenset(required)


def requested(params: dict[str, list[str]]) -> tuple[str | None, list[str]]:
    """The `_summary` mode asked for (None, or "false": nothing to do) and the `_elements` named."""
    values = params.get("_summary") or []
    summary = values[-1] if values else None
    elements = [e.strip() for v in params.get("_elements") or [] for e in v.split(",") if e.strip()]
    return (summary if summary in SUMMARY_MODES else None), elements


def _keep(resource: dict[str, Any], names: set[str]) -> None:
    for key in list(resource):
        bare = key[1:] if key.startswith("_") else key  # `_status` carries `status`'s extensions
        if key not in ALWAYS and bare not in names:
            del resource[key]


def _cut(resource: dict[str, Any], summary: str | None, elements: list[str]) -> None:
    rtype = str(resource.get("resourceType"))
    summary_names, required = _flags(rtype)
    if elements:
        _keep(resource, {e.split(".")[0] for e in elements} | set(required))
    elif summary == "true":
        _keep(resource, set(summary_names) | set(required))
    elif summary == "text":
        _keep(resource, {"text"} | set(required))
    elif summary == "data":
        resource.pop("text", None)
    else:
        return
    meta = resource.setdefault("meta", {})
    if isinstance(meta, dict):
        tags = meta.setdefault("tag", [])
        if isinstance(tags, list) and not any(
            isinstance(t, dict) and t.get("code") == "SUBSETTED" for t in tags
        ):
            tags.append(dict(SUBSETTED))


def apply_subset(body: Any, params: dict[str, list[str]]) -> str | None:
    """Cut the released resources of ``body`` as ``_summary``/``_elements`` ask; what was applied."""
    summary, elements = requested(params)
    if not (summary or elements) or not isinstance(body, dict):
        return None
    if body.get("resourceType") == "Bundle" and body.get("type") in ("searchset", "history"):
        for entry in body.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            mode = (entry.get("search") or {}).get("mode", "match") if isinstance(entry, dict) else None
            if (
                isinstance(resource, dict)
                and mode == "match"
                and resource.get("resourceType") != "OperationOutcome"
            ):
                _cut(resource, summary, elements)
    elif body.get("resourceType") not in ("Bundle", "OperationOutcome", "Parameters"):
        _cut(body, summary, elements)
    return f"_elements={','.join(elements)}" if elements else f"_summary={summary}"
