"""What a FHIR request asks for: interaction, resource type, id, and every patient it targets.

The policy decides on this model, so it must never guess: a path, method or body the gateway does
not understand is refused with 400 (I.4: access control is only as good as the request model).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from gateway import rules
from gateway.errors import GatewayError, Reason, error
from gateway.fhir.resource_types import RESOURCE_TYPES
from gateway.fhir.resources import UNRESOLVED_PATIENT, reference_patient, resource_patients

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
OPERATION_RE = re.compile(r"^\$[A-Za-z][A-Za-z0-9\-_]*$")
JSON_FORMATS = frozenset({"json", "application/json", "application/fhir+json", "application/json+fhir"})
WRITE_INTERACTIONS = frozenset({"create", "update", "patch", "delete"})

# Search parameters whose value names the patient, in every spelling a client may use:
# `patient=x`, `patient=Patient/x`, `subject:Patient=x`, `patient:Patient=<abs url>` ...
PATIENT_PARAMS = frozenset({"patient", "subject", "beneficiary"})


@dataclass
class FhirRequest:
    """One FHIR interaction (a batch or transaction holds its entries as sub-requests)."""

    method: str
    interaction: str
    level: str  # system | type | instance
    resource_type: str | None = None
    id: str | None = None
    version_id: str | None = None
    operation: str | None = None
    compartment: str | None = None  # "Patient/x" for Patient/x/Observation
    conditional: bool = False
    params: dict[str, list[str]] = field(default_factory=dict)
    patients: set[str] = field(default_factory=set)
    body: Any = None
    entries: list[FhirRequest] = field(default_factory=list)
    #: Search of a conditional create (If-None-Exist header, or entry.request.ifNoneExist).
    if_none_exist: dict[str, list[str]] = field(default_factory=dict)

    @property
    def is_write(self) -> bool:
        return self.interaction in WRITE_INTERACTIONS or (
            self.interaction in ("batch", "transaction") and any(e.is_write for e in self.entries)
        )

    def all_patients(self) -> list[str]:
        found = set(self.patients)
        for entry in self.entries:
            found.update(entry.all_patients())
        return sorted(found)

    def to_policy(self) -> dict[str, Any]:
        """The `action` and `target` parts of a policy input (see opa_policies/README.md)."""
        return {
            "action": {
                "interaction": self.interaction,
                "method": self.method,
                "level": self.level,
                "operation": self.operation,
                "conditional": self.conditional,
            },
            "target": {
                "type": self.resource_type,
                "id": self.id,
                "compartment": self.compartment,
                "patients": self.all_patients(),
                "params": self.params,
                "if_none_exist": self.if_none_exist,
                "entries": [
                    {
                        "interaction": e.interaction,
                        "conditional": e.conditional,
                        "method": e.method,
                        "type": e.resource_type,
                        "id": e.id,
                        "operation": e.operation,
                        "patients": e.all_patients(),
                        "params": e.params,
                    }
                    for e in self.entries
                ],
            },
        }


def _bad(en: str, zh: str, rule: str = rules.MALFORMED) -> GatewayError:
    return error(status=400, code="invalid", rule=rule, en=en, zh=zh)


def _check_type(name: str) -> str:
    if name not in RESOURCE_TYPES:
        raise _bad(
            f"'{name}' is not a FHIR R4 resource type", f"“{name}”不是 FHIR R4 资源类型", rules.UNKNOWN_TYPE
        )
    return name


def _check_id(value: str) -> str:
    # "." and ".." fit the FHIR id pattern but are path steps: Patient/../Observation would be
    # decided as one request and normalised by the HTTP client into another (all patients).
    if not ID_RE.fullmatch(value) or value in (".", ".."):
        raise _bad(
            f"'{value[:80]}' is not a valid FHIR id", f"“{value[:80]}”不是有效的 FHIR 资源 id", rules.BAD_ID
        )
    return value


def parse_params(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for key, value in pairs:
        if not key:
            raise _bad("empty search parameter name", "查询参数名为空")
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


def _reference_to_patient(value: str) -> str | None:
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
        return f"Patient/{_check_id(parts[-1])}" if parts[-2] == "Patient" else None
    if len(parts) == 1:
        # A bare id: for `patient=` it is a Patient; for `subject=` it may be a Group too, but
        # treating it as a patient only makes the decision stricter, never looser.
        return f"Patient/{_check_id(parts[0])}"
    raise _bad(f"'{value[:80]}' is not a reference", f"“{value[:80]}”不是有效的引用")


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
                found.update(f"Patient/{_check_id(v.strip())}" for v in value.split(",") if v.strip())
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
                        raise _bad(
                            f"'{item[:80]}' is not a valid patient reference",
                            f"“{item[:80]}”不是有效的患者引用",
                            rules.BAD_ID,
                        )
                    if patient:
                        found.add(patient)
                    elif name in PATIENT_PARAMS:
                        _reference_to_patient(item)  # Group/g1 is fine; a value that is no reference is a 400

                elif bare_is_patient:
                    found.add(f"Patient/{_check_id(item)}")
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
                patient = _reference_to_patient(ref)
                if patient:
                    found.add(patient)
    return found


def _body_resource(body: Any, expected_type: str | None) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        raise _bad(
            "the request body is not a FHIR resource (JSON object with resourceType)",
            "请求体不是 FHIR 资源(缺少 resourceType 的 JSON 对象)",
        )
    if expected_type and body["resourceType"] != expected_type:
        raise _bad(
            f"body resourceType '{body['resourceType']}' does not match the URL's '{expected_type}'",
            f"请求体 resourceType“{body['resourceType']}”与 URL 中的“{expected_type}”不一致",
        )
    return body


def parse_request(
    method: str, path: str, query: list[tuple[str, str]], body: Any = None, *, nested: bool = False
) -> FhirRequest:
    """Parse ``path`` (relative to the FHIR base, no leading slash) into a FhirRequest.

    ``body`` is the parsed JSON body (or for POST _search, None: its form fields belong in
    ``query``). ``nested`` is set for the entries of a batch/transaction, which may not nest.
    """
    method = method.upper()
    params = parse_params(query)
    segments = [s for s in path.split("/") if s]
    if any(s in (".", "..") for s in segments):
        raise _bad(
            "'.' and '..' are not allowed in a FHIR path", "FHIR 路径中不允许出现“.”或“..”", rules.BAD_ID
        )
    n = len(segments)
    req = FhirRequest(method=method, interaction="", level="system", params=params, body=body)

    def unsupported() -> GatewayError:
        return _bad(
            f"{method} /{path} is not a FHIR interaction this gateway understands",
            f"无法识别的 FHIR 交互:{method} /{path}",
            rules.UNKNOWN_INTERACTION,
        )

    if n == 0:
        if method == "GET":
            req.interaction = "search-system"
        elif method == "POST" and not nested:
            bundle = _body_resource(body, "Bundle")
            kind = bundle.get("type")
            if kind not in ("batch", "transaction"):
                raise _bad(
                    "a Bundle posted to the base must be of type batch or transaction",
                    "提交到根地址的 Bundle 必须是 batch 或 transaction 类型",
                )
            req.interaction = kind
            req.entries = _parse_entries(bundle)
        else:
            raise unsupported()
        return req

    first = segments[0]
    if n == 1 and first == "metadata" and method == "GET":
        req.interaction = "capabilities"
        return req
    if n == 1 and first == "_history" and method == "GET":
        req.interaction = "history-system"
        return req
    if n == 1 and first == "_search" and method == "POST":
        req.interaction = "search-system"
        return req
    if first.startswith("$"):
        return _operation(req, segments, 0, method, unsupported)

    req.resource_type = _check_type(first)
    req.level = "type"
    if n == 1:
        if method == "GET":
            req.interaction = "search-type"
        elif method == "POST":
            req.interaction = (
                "create"  # a conditional create (If-None-Exist header) is marked by the pipeline
            )
            req.patients = resource_patients(_body_resource(body, req.resource_type))
        elif method in ("PUT", "PATCH", "DELETE") and params:
            req.interaction = {"PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
            req.conditional = True
            if method == "PUT":
                req.patients = resource_patients(_body_resource(body, req.resource_type))
        else:
            raise unsupported()
        req.patients |= patients_in_params(req.resource_type, params)
        return req

    second = segments[1]
    if n == 2 and second == "_search" and method == "POST":
        req.interaction = "search-type"
    elif n == 2 and second == "_history" and method == "GET":
        req.interaction = "history-type"
    elif second.startswith("$"):
        return _operation(req, segments, 1, method, unsupported)
    else:
        req.id = _check_id(second)
        req.level = "instance"
        if req.resource_type == "Patient":
            req.patients.add(f"Patient/{req.id}")
        if n == 2:
            interaction = {"GET": "read", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
            if interaction is None:
                raise unsupported()
            req.interaction = interaction
            if method == "PATCH":
                req.patients |= patched_patients(body)
            if method == "PUT":
                resource = _body_resource(body, req.resource_type)
                if resource.get("id") != req.id:
                    raise _bad(
                        f"body id '{resource.get('id')}' does not match the URL id '{req.id}'",
                        f"请求体 id“{resource.get('id')}”与 URL 中的 id“{req.id}”不一致",
                    )
                req.patients |= resource_patients(resource)
        elif segments[2] == "_history" and method == "GET" and n in (3, 4):
            if n == 3:
                req.interaction = "history-instance"
            else:
                req.interaction = "vread"
                req.version_id = _check_id(segments[3])
        elif segments[2].startswith("$"):
            return _operation(req, segments, 2, method, unsupported)
        elif n == 3 and method == "GET" and req.resource_type == "Patient":
            # Compartment search: Patient/x/Observation is Observation?patient=x.
            req.compartment = f"Patient/{req.id}"
            req.resource_type = _check_type(segments[2])
            req.id = None
            req.level = "type"
            req.interaction = "search-type"
        else:
            raise unsupported()
    req.patients |= patients_in_params(req.resource_type, params)
    return req


def _operation(
    req: FhirRequest, segments: list[str], index: int, method: str, unsupported: Any
) -> FhirRequest:
    if (
        index != len(segments) - 1
        or not OPERATION_RE.fullmatch(segments[index])
        or method not in ("GET", "POST")
    ):
        raise unsupported()
    name = segments[index]
    req.operation = name
    req.interaction = "graphql" if name == "$graphql" else "operation"
    req.patients |= patients_in_params(req.resource_type, req.params)
    if isinstance(req.body, dict) and req.body.get("resourceType") == "Parameters":
        for p in req.body.get("parameter") or []:
            if isinstance(p, dict) and p.get("name") in PATIENT_PARAMS:
                ref = (
                    (p.get("valueReference") or {}).get("reference")
                    or p.get("valueString")
                    or p.get("valueId")
                )
                if isinstance(ref, str):
                    patient = _reference_to_patient(ref)
                    if patient:
                        req.patients.add(patient)
    return req


def _parse_entries(bundle: dict[str, Any]) -> list[FhirRequest]:
    entries = bundle.get("entry")
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise _bad("Bundle.entry must be an array", "Bundle.entry 必须是数组")
    parsed: list[FhirRequest] = []
    for i, entry in enumerate(entries):
        request = entry.get("request") if isinstance(entry, dict) else None
        if (
            not isinstance(request, dict)
            or not isinstance(request.get("method"), str)
            or not isinstance(request.get("url"), str)
        ):
            raise _bad(
                f"Bundle.entry[{i}].request needs method and url",
                f"Bundle.entry[{i}].request 缺少 method 或 url",
            )
        url = request["url"]
        if "://" in url.split("?", 1)[0] or url.startswith("//"):
            raise _bad(
                f"Bundle.entry[{i}].request.url must be relative to this server",
                f"Bundle.entry[{i}].request.url 必须是相对地址",
            )
        split = urlsplit(url)
        try:
            sub = parse_request(
                request["method"],
                split.path.lstrip("/"),
                parse_qsl(split.query, keep_blank_values=True),
                entry.get("resource"),
                nested=True,
            )
            check_format(sub.params, "")
            if any(k.split(":")[0] == "_elements" for k in sub.params):
                raise _bad(
                    "_elements is not accepted inside a batch or transaction",
                    "批处理条目中不接受 _elements 参数",
                )
            if isinstance(request.get("ifNoneExist"), str):
                sub.conditional = True
                sub.if_none_exist = parse_params(parse_qsl(request["ifNoneExist"], keep_blank_values=True))
        except GatewayError as exc:
            exc.reasons = [
                Reason(r.rule, f"Bundle.entry[{i}]: {r.en}", f"Bundle.entry[{i}]:{r.zh}", r.clause)
                for r in exc.reasons
            ]
            raise
        parsed.append(sub)
    return parsed
