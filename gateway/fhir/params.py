"""The parameters of a FHIR request: parsed, checked for format, and every patient they name.

Split from request.py: what a search or patch *names* (the patients sealing and the care
relationship must hold for, whichever reference a client follows) is its own job.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from gateway import rules
from gateway.errors import GatewayError, error
from gateway.fhir.resource_types import RESOURCE_TYPES
from gateway.fhir.resources import UNRESOLVED_PATIENT, reference_patient

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
