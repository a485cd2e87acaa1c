"""The parameters of a FHIR request: parsed, checked for format, allow-listed, and every patient they name.

Split from request.py: what a search or patch *names* (the patients sealing and the care
relationship must hold for, whichever reference a client follows) is its own job, and so is which
search parameters reach the upstream at all (:func:`check_search`, I.4: a parameter the gateway does
not understand can be an oracle, or name a patient the checks never see).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from gateway import rules
from gateway.errors import GatewayError, Reason, error
from gateway.fhir.resource_types import RESOURCE_TYPES
from gateway.fhir.resources import UNRESOLVED_PATIENT, reference_patient
from gateway.fhir.search_params import COMMON_PARAMS, SEARCH_PARAMS, SearchParam

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
JSON_FORMATS = frozenset({"json", "application/json", "application/fhir+json", "application/json+fhir"})
# Search parameters whose value names the patient, in every spelling a client may use:
# `patient=x`, `patient=Patient/x`, `subject:Patient=x`, `patient:Patient=<abs url>` ...
PATIENT_PARAMS = frozenset({"patient", "subject", "beneficiary"})


def bad_request(en: str, zh: str, rule: str = rules.MALFORMED) -> GatewayError:
    return error(status=400, code="invalid", rule=rule, en=en, zh=zh)


def check_id(value: str) -> str:
    # "." and ".." fit the FHIR id pattern but are path steps: Patient/../Observation would be
    # decided as one request and normalised by the HTTP client into another (all patients).
    if not ID_RE.fullmatch(value) or value in (".", ".."):
        raise bad_request(
            f"'{value[:80]}' is not a valid FHIR id", f"“{value[:80]}”不是有效的 FHIR 资源 id", rules.BAD_ID
        )
    return value


def parse_params(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for key, value in pairs:
        if not key:
            raise bad_request("empty search parameter name", "查询参数名为空")
        params.setdefault(key, []).append(value)
    return params


def check_format(params: dict[str, list[str]], accept: str) -> None:
    """JSON only: an XML (or any other) body would pass the per-resource filter unseen -> 406."""
    for value in params.get("_format", []):
        if value.split(";")[0].strip().lower() not in JSON_FORMATS:
            raise error(
                status=406,
                code="not-supported",
                rule=rules.FORMAT_NOT_ACCEPTABLE,
                en=f"format '{value}' is not served; this gateway answers application/fhir+json only",
                zh=f"不提供“{value}”格式;本网关仅返回 application/fhir+json",
            )
    if accept:
        media = [m.split(";")[0].strip().lower() for m in accept.split(",") if m.strip()]
        if media and not any(m in JSON_FORMATS or m in ("*/*", "application/*") for m in media):
            raise error(
                status=406,
                code="not-supported",
                rule=rules.FORMAT_NOT_ACCEPTABLE,
                en=f"Accept '{accept}' cannot be served; this gateway answers application/fhir+json only",
                zh=f"无法按 Accept“{accept}”返回;本网关仅返回 application/fhir+json",
            )


def reference_to_patient(value: str) -> str | None:
    """Turn a reference search value into 'Patient/x', or None if it names something else."""
    value = value.strip()
    if not value:
        return None
    if "://" in value:
        value = urlsplit(value).path
    parts = [p for p in value.split("/") if p]
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2] in RESOURCE_TYPES:
        return f"Patient/{check_id(parts[-1])}" if parts[-2] == "Patient" else None
    if len(parts) == 1:
        # A bare id: for `patient=` it is a Patient; for `subject=` it may be a Group too, but
        # treating it as a patient only makes the decision stricter, never looser.
        return f"Patient/{check_id(parts[0])}"
    raise bad_request(f"'{value[:80]}' is not a reference", f"“{value[:80]}”不是有效的引用")


def patients_in_params(resource_type: str | None, params: dict[str, list[str]]) -> set[str]:
    """Every patient a search names, by any reference parameter: `patient=x`, `subject=Patient/x`,
    `actor=Patient/x`, `focus=…`, `target=…`, `member:Patient=x` … (sealing and the care relationship
    must hold whichever link a search follows)."""
    found: set[str] = set()
    for key, values in params.items():
        name, _, modifier = key.partition(":")
        if "." in name or "." in modifier or name.startswith("_has"):
            continue  # chained / reverse-chained: no patient id to read here; the policy sees the params
        if name == "_id" and resource_type == "Patient" and modifier == "":
            for value in values:
                found.update(f"Patient/{check_id(v.strip())}" for v in value.split(",") if v.strip())
            continue
        bare_is_patient = (name in PATIENT_PARAMS and modifier == "") or modifier.lower() == "patient"
        for value in values:
            for item in value.split(","):
                item = item.strip()
                if not item or name.startswith("_"):
                    continue
                if "/" in item:
                    patient = reference_patient({"reference": item.split("://", 1)[-1]})
                    if patient == UNRESOLVED_PATIENT:
                        raise bad_request(
                            f"'{item[:80]}' is not a valid patient reference",
                            f"“{item[:80]}”不是有效的患者引用",
                            rules.BAD_ID,
                        )
                    if patient:
                        found.add(patient)
                    elif name in PATIENT_PARAMS:
                        reference_to_patient(item)  # Group/g1 is fine; a value that is no reference is a 400

                elif bare_is_patient:
                    found.add(f"Patient/{check_id(item)}")
    return found


def patched_patients(body: Any) -> set[str]:
    """Patients a JSON Patch moves a record to (`/subject`, `/patient`): a write targets them too."""
    found: set[str] = set()
    for op in body if isinstance(body, list) else []:
        if not isinstance(op, dict) or not isinstance(op.get("path"), str):
            continue
        element = op["path"].strip("/").split("/")[0]
        if element in PATIENT_PARAMS:
            value = op.get("value")
            ref = value.get("reference") if isinstance(value, dict) else value
            if isinstance(ref, str):
                patient = reference_to_patient(ref)
                if patient:
                    found.add(patient)
    return found


# --- which search parameters reach the upstream (I.4) ----------------------------------------------

#: Refused whatever they say: the gateway cannot tell what they select. (en, zh)
NOT_SERVED = {
    "_filter": ("a filter expression", "过滤表达式"),
    "_query": ("a named query", "命名查询"),
    "_text": ("a text search", "全文检索"),
    "_content": ("a text search", "全文检索"),
    "_list": ("the entries of a List", "列表条目"),
    "_contained": ("contained resources as results", "以内嵌资源作为结果"),
    "_containedType": ("contained resources as results", "以内嵌资源作为结果"),
}
#: Result parameters (no SearchParameters) and the values they take (None: checked below). `_format`
#: is checked by :func:`check_format`, `_summary`/`_elements` are never forwarded (gateway/pipeline.py),
#: `_cursor` is the gateway's own paging link (gateway/paging.py), `_type` names a system search's types.
RESULT_PARAMS: dict[str, frozenset[str] | None] = {
    "_summary": frozenset({"true", "false", "text", "data", "count"}),
    "_total": frozenset({"none", "estimate", "accurate"}),
    "_pretty": frozenset({"true", "false"}),
    **dict.fromkeys(
        ("_count", "_sort", "_include", "_revinclude", "_elements", "_format", "_type", "_cursor")
    ),
}
SINGLE_VALUED = frozenset({"_count", "_sort", "_summary", "_elements", "_total", "_pretty", "_type"})
#: Modifiers besides `:missing` (every type): a string's `:exact`/`:contains`, a uri's `:above`/`:below`,
#: a token's `:not` only over codes and booleans (a status: no graded content, no id or identifier), a
#: reference's `:<Type>` among its targets. Nothing else: `:text`, `:in`, `:not-in`, `:below`, `:above`,
#: `:of-type` select what the gateway cannot bound, `:identifier` names a patient it cannot tell.
MODIFIERS = {"string": ("exact", "contains"), "uri": ("above", "below")}
TOKEN_NOT = frozenset({"code", "boolean"})
ELEMENT_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*$")
ANY = ("*",)


def _refused(rule: str, en: str, zh: str) -> GatewayError:
    code = "invalid" if rule in (rules.SEARCH_BAD_VALUE, rules.SEARCH_UNKNOWN_PARAM) else "not-supported"
    return error(status=400, code=code, rule=rule, en=en, zh=zh, clause="I.4")


def _unknown(key: str, types: list[str]) -> GatewayError:
    what = ", ".join(types) or "a search of all types"
    return _refused(
        rules.SEARCH_UNKNOWN_PARAM,
        f"'{key[:80]}' is not a FHIR R4 search parameter of {what} (names and modifiers are case-sensitive):"
        " this gateway forwards only the parameters it understands",
        f"“{key[:80]}”不是 {what} 的 FHIR R4 检索参数(参数名与修饰符区分大小写):本网关仅转发其能识别的参数",
    )


def _bad_value(key: str, takes: str) -> GatewayError:
    return _refused(rules.SEARCH_BAD_VALUE, f"'{key[:80]}' takes {takes}", f"“{key[:80]}”的取值应为:{takes}")


def _lookup(rtype: str, name: str) -> SearchParam | None:
    return COMMON_PARAMS.get(name) or SEARCH_PARAMS.get(rtype, {}).get(name)


def _points_to(p: SearchParam | None, rtype: str) -> bool:
    return p is not None and p.kind == "reference" and (p.targets == ANY or rtype in p.targets)


def _graded(p: SearchParam) -> bool:
    """Selects by what grading reads: codings (codes, security labels, tags), composites of them."""
    return p.kind == "composite" or (p.kind == "token" and p.selects == "coding")


def check_search(resource_type: str | None, params: dict[str, list[str]], where: str = "") -> None:
    """Refuse (400, I.4) a search with a parameter the gateway does not understand for the type
    searched (``resource_type``, or a system search's `_type`): an unknown name (exact case), a
    modifier outside :data:`MODIFIERS`, a chain or `_has` whose links are not references of the types
    they leave or that ends in graded content, :data:`NOT_SERVED`, a result parameter with a value it
    does not take. The refusal names only the parameter the requester sent."""
    try:
        types = [resource_type] if resource_type else _system_types(params)
        for key, values in params.items():
            _check_param(types, key, values, system=resource_type is None)
    except GatewayError as exc:
        if where:
            exc.reasons = [Reason(r.rule, f"{where}{r.en}", f"{where}{r.zh}", r.clause) for r in exc.reasons]
        raise


def _system_types(params: dict[str, list[str]]) -> list[str]:
    types = sorted({t.strip() for v in params.get("_type", []) for t in v.split(",") if t.strip()})
    for t in types:
        if t not in RESOURCE_TYPES:
            raise bad_request(
                f"'{t[:80]}' is not a FHIR R4 resource type",
                f"“{t[:80]}”不是 FHIR R4 资源类型",
                rules.UNKNOWN_TYPE,
            )
    return types


def _known(types: list[str], name: str, key: str) -> list[SearchParam]:
    """The parameter on each type searched (a system search without `_type`: the common ones)."""
    found = [_lookup(t, name) for t in types] if types else [COMMON_PARAMS.get(name)]
    if not all(found):
        raise _unknown(key, types)
    return [p for p in found if p]


def _check_param(types: list[str], key: str, values: list[str], system: bool) -> None:
    name, _, modifier = key.partition(":")
    if "" in re.split(r"[:.]", key):  # `patient:`, `subject..name`: no parameter a server agrees on
        raise _unknown(key, types)
    if name in RESULT_PARAMS:
        _check_result(types, name, modifier, key, values, system)
    elif name in NOT_SERVED:
        en, zh = NOT_SERVED[name]
        raise _refused(
            rules.SEARCH_PARAM_NOT_SERVED,
            f"search parameter '{key[:80]}' ({en}) is not served: the gateway cannot tell what it selects",
            f"不提供检索参数“{key[:80]}”({zh}):网关无法判断其筛选范围",
        )
    elif name == "_has" and modifier:
        _check_has(types, key, values)
    elif "." in key:
        _check_chain(types, key, values)
    else:
        for p in _known(types, name, key):
            _check_modifier(p, key, modifier, values, through=False)


def _check_modifier(p: SearchParam, key: str, modifier: str, values: list[str], through: bool) -> None:
    """``through``: the last parameter of a chain or `_has`, which the policy cannot grade."""
    if modifier == "missing":
        if any(v not in ("true", "false") for v in values):
            raise _bad_value(key, "true or false")
        return
    if through and _graded(p):
        raise _refused(
            rules.SEARCH_CHAIN_NOT_SERVED,
            f"'{key[:80]}' selects by graded content (codes, security labels) through a chain or _has,"
            " which the gateway cannot grade: search the referenced type by its codes directly",
            f"“{key[:80]}”经链式参数或 _has 按分级内容(代码、安全标签)筛选,网关无法判断其级别:请直接按代码检索被引用的资源类型",
        )
    if not modifier or (p.kind == "reference" and modifier in RESOURCE_TYPES and _points_to(p, modifier)):
        return
    if p.kind == "token" and modifier == "not" and p.selects in TOKEN_NOT:
        return
    if modifier in MODIFIERS.get(p.kind, ()):
        return
    if p.kind == "reference" and modifier == "identifier":
        raise _refused(
            rules.SEARCH_MODIFIER_NOT_SERVED,
            f"'{key[:80]}': a reference by identifier names no record the gateway can check (which patient"
            " it is); search by reference, or find the record by its identifier first",
            f"“{key[:80]}”:按标识符引用时网关无法确认所指记录(哪位患者);请按引用检索,或先按标识符查到该记录",
        )
    extra = {"reference": ("<type>",), "token": ("not",) if p.selects in TOKEN_NOT else ()}
    allowed = ", ".join(f":{m}" for m in ("missing", *MODIFIERS.get(p.kind, extra.get(p.kind, ()))))
    raise _refused(
        rules.SEARCH_MODIFIER_NOT_SERVED,
        f"modifier ':{modifier[:40]}' of '{key[:80]}' is not served: the gateway cannot tell what it"
        f" selects (this parameter takes {allowed})",
        f"不提供“{key[:80]}”的修饰符“:{modifier[:40]}”:网关无法判断其筛选范围(此参数可用 {allowed})",
    )


def _check_has(types: list[str], key: str, values: list[str]) -> None:
    """`_has:Type:reference:parameter` (nested `_has` too): each reference points to the type before
    it; the last parameter is one of Type's and no graded content (the policy cannot grade it)."""
    if len(types) != 1:
        raise _refused(
            rules.SEARCH_CHAIN_NOT_SERVED,
            f"'{key[:80]}': _has needs a search of one resource type",
            f"“{key[:80]}”:_has 只能用于检索单一资源类型",
        )
    current, rest = types[0], key
    while True:
        parts = rest.split(":", 3)
        if len(parts) < 4 or parts[0] != "_has" or not _points_to(_lookup(parts[1], parts[2]), current):
            raise _unknown(key, [current])
        _, source, _, rest = parts
        if not rest.startswith("_has:"):
            break
        current = source
    if "." in rest:
        raise _refused(
            rules.SEARCH_CHAIN_NOT_SERVED,
            f"'{key[:80]}': a chain inside _has is not served",
            f"“{key[:80]}”:不提供 _has 内的链式参数",
        )
    name, _, modifier = rest.partition(":")
    for found in _known([source], name, key):
        _check_modifier(found, key, modifier, values, through=True)


def _check_chain(types: list[str], key: str, values: list[str]) -> None:
    """`subject.name`, `subject:Patient.identifier`: every link a reference parameter of the types it
    leaves (a `:Type` among its targets); the last parameter one of a type it reaches."""
    *links, last = key.split(".")
    current = types
    for link in links:
        name, _, to = link.partition(":")
        params = [_lookup(t, name) for t in current]
        if not current or not all(p and p.kind == "reference" for p in params):
            raise _unknown(key, current)
        targets = {t for p in params if p for t in (RESOURCE_TYPES if p.targets == ANY else p.targets)}
        if to and to not in targets:
            raise _unknown(key, current)
        current = [to] if to else sorted(targets)
    name, _, modifier = last.partition(":")
    found = [p for t in current if (p := _lookup(t, name))]
    if not found:
        raise _unknown(key, current)
    for p in found:
        _check_modifier(p, key, modifier, values, through=True)


def _check_result(
    types: list[str], name: str, modifier: str, key: str, values: list[str], system: bool
) -> None:
    if modifier and not (name in ("_include", "_revinclude") and modifier == "iterate"):
        raise _refused(
            rules.SEARCH_MODIFIER_NOT_SERVED,
            f"modifier ':{modifier[:40]}' of '{key[:80]}' is not served",
            f"不提供“{key[:80]}”的修饰符“:{modifier[:40]}”",
        )
    if name in SINGLE_VALUED and len(values) != 1:
        raise _bad_value(key, "one value, given once")
    if name == "_type" and not system:
        raise _refused(
            rules.SEARCH_PARAM_NOT_SERVED,
            "_type names the types of a search of all types (GET [base]?_type=…), not of one type",
            "_type 仅用于跨类型检索(GET [base]?_type=…),不能用于单一类型的检索",
        )
    if name == "_format":  # also where check_format did not look: a POST _search form, a batch entry
        check_format({name: values}, "")
    allowed = RESULT_PARAMS[name]
    for value in values:
        if allowed is not None and value not in allowed:
            raise _bad_value(key, " | ".join(sorted(allowed)))
        if name == "_count" and not re.fullmatch(r"\d{1,6}", value):
            raise _bad_value(key, "a number of entries (0-999999)")
        if name == "_elements" and not all(ELEMENT_RE.match(e.strip()) for e in value.split(",")):
            raise _bad_value(key, "a comma-separated list of element names")
        if name in ("_include", "_revinclude") and value != "*" and not _is_include(value):
            raise _bad_value(key, "'*' or Type:parameter[:TargetType], the parameter a reference of Type")
        for item in value.split(",") if name == "_sort" else ():
            sort_key = f"_sort={item.strip()[:80]}"
            if any(_graded(p) for p in _known(types, item.strip().removeprefix("-"), sort_key)):
                raise _refused(
                    rules.SEARCH_PARAM_NOT_SERVED,
                    f"'{sort_key}': sorting by graded content (codes, security labels) is not served",
                    f"“{sort_key}”:不提供按分级内容(代码、安全标签)排序",
                )


def _is_include(value: str) -> bool:
    """`Type:parameter` or `Type:parameter:Target` (a reference of Type), or `Type:*`."""
    source, _, rest = value.partition(":")
    ref, _, target = rest.partition(":")
    if source not in RESOURCE_TYPES or ref == "*":
        return source in RESOURCE_TYPES and not target
    p = _lookup(source, ref)
    if target:
        return target in RESOURCE_TYPES and _points_to(p, target)
    return p is not None and p.kind == "reference"
