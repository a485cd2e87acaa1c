"""The codings of a resource, wherever they sit: what grading reads (I.4)."""

from __future__ import annotations

from typing import Any

__all__ = ["_codings", "all_codings"]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _codings(value: Any) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for item in value if isinstance(value, list) else [value]:
        if not isinstance(item, dict):
            continue
        codings = item.get("coding") if "coding" in item else [item]
        for c in codings if isinstance(codings, list) else [codings]:
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
