"""Nothing leaks (issue): three classes of leak a hostile insider found, held on the embedded engine
(regorus, as the gateway decides) with inputs built as in tests/gateway/policy/test_parity.py.

1. Canonical code systems: a coding's system is compared in canonical form (scheme and host in any
   case, a trailing '/', every alias kept as data), its code as its system defines (ICD-10 in any
   case, dotted or not), when grading returned resources and when judging search parameters.
2. No search oracle by graded content: every spelling of a search that selects by graded content
   (modifiers, comma lists, composites, codes without a system, _security/_tag, text searches) is
   refused below the grade it could select, for a GET and for a POST _search alike.
3. Refusals name only what the requester sent: no other patient's id, seal case or grant id in a
   reason's en/zh, as the gateway renders them; the specifics are in `detail`, kept for the audit.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.errors import GatewayError, Reason, operation_outcome
from gateway.fhir.filter import apply_verdicts
from gateway.fhir.request import parse_request
from gateway.fhir.resources import collect
from gateway.policy import policy_data
from gateway.policy.embedded import EmbeddedEngine
from tests.conftest import POLICY_DIR
from tests.gateway.policy.test_parity import PATIENTS, base, entry

ICD = "http://hl7.org/fhir/sid/icd-10"
CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
CASE = "舆情-2026-031"  # the case of Patient/sealed (test_parity.PATIENTS)


@pytest.fixture(scope="module")
def engine() -> EmbeddedEngine:
    # Loaded (synchronously) on the thread every test of the module runs its event loop on.
    e = EmbeddedEngine(POLICY_DIR, timeout=5)
    e.load()
    return e


def search(
    role: str, params: dict[str, list[str]], rtype: str = "Condition", purpose: str = "TREAT"
) -> dict[str, Any]:
    """A search by `role` (id u1, cardiology) over Patient/p1, who is in the operator's care."""
    return base(
        [role],
        purpose,
        action={"interaction": "search-type", "method": "GET", "level": "type", "operation": None,
                "conditional": False},
        target={"type": rtype, "id": None, "compartment": None, "patients": ["Patient/p1"], "params": params,
                "if_none_exist": {}, "entries": []},
    )  # fmt: skip


def read(role: str, rtype: str, rid: str, patients: list[str], purpose: str = "TREAT") -> dict[str, Any]:
    """A read by id: the client names `rtype/rid`; the gateway found its `patients`."""
    return base(
        [role],
        purpose,
        action={"interaction": "read", "method": "GET", "level": "instance", "operation": None,
                "conditional": False},
        target={"type": rtype, "id": rid, "compartment": None, "patients": patients, "params": {},
                "if_none_exist": {}, "entries": []},
    )  # fmt: skip


def rendered(reasons: list[Reason]) -> str:
    """What the requester gets: the gateway's OperationOutcome, as JSON text."""
    return json.dumps(operation_outcome(GatewayError(403, "forbidden", reasons), "req-1"), ensure_ascii=False)


# --- 1. canonical code systems -------------------------------------------------------------------

#: (system, code, grade): every spelling a record of the same content can carry.
CANONICAL_CODINGS = [
    ("HTTP://HL7.org/fhir/sid/icd-10", "B20", 5),
    ("http://hl7.org/fhir/sid/icd-10/", "b20", 5),
    ("urn:oid:2.16.840.1.113883.6.3", "B20.1", 5),  # HL7's OID for ICD-10
    ("URN:OID:2.16.840.1.113883.6.3", "b201", 5),
    ("urn:oid:2.16.840.1.113883.6.90", "F10.2", 5),  # ICD-10-CM
    ("http://hl7.org/fhir/sid/icd-10-cm/", "z21", 5),
    ("URN:OID:2.16.156.10011.2.3.3.11", "b24.001", 5),  # the national edition
    ("https://hl7.org/fhir/sid/icd-10", "F32", 4),
    ("https://hl7.org/fhir/sid/icd-10-cm", "f321", 4),
    ("HTTP://LOINC.ORG", "51969-4", 5),
    ("urn:oid:2.16.840.1.113883.6.1", "51969-4", 5),
    ("http://snomed.info/sct/", "86406008", 5),
    ("urn:oid:2.16.840.1.113883.6.96", "66214007", 5),
]


@pytest.mark.parametrize(("system", "code", "grade"), CANONICAL_CODINGS)
async def test_codings_graded_in_every_spelling_of_their_system(
    engine: EmbeddedEngine, system: str, code: str, grade: int
) -> None:
    entries = [entry("Condition", ["Patient/p1"], codes=[{"system": system, "code": code}])]
    officer = await engine.decide_response(base(["records_officer"], "HOPERAT", entries=entries))
    assert officer.verdicts[0]["grade"] == grade
    nurse = await engine.decide_response(base(["nurse"], "TREAT", entries=entries))
    physician = await engine.decide_response(base(["physician"], "TREAT", entries=entries))
    assert nurse.verdicts[0]["keep"] is (grade <= 4)  # TREAT: nurse cap 4
    assert physician.verdicts[0]["keep"] is True  # TREAT: physician cap 5


@pytest.mark.parametrize(
    ("system", "code", "grade"),
    [
        ("HTTP://terminology.hl7.org/CodeSystem/v3-Confidentiality/", "V", 5),
        ("urn:oid:2.16.840.1.113883.5.25", "r", 4),
        ("http://hl7.org/fhir/v3/ActCode", "HIV", 5),
        ("urn:oid:2.16.840.1.113883.5.4", "psy", 4),
        ("", "V", 5),  # a label without a system: any label system's
    ],
)
async def test_labels_and_tags_graded_in_every_spelling(
    engine: EmbeddedEngine, system: str, code: str, grade: int
) -> None:
    label = [{"system": system, "code": code}]
    entries = [
        entry("Observation", ["Patient/p1"], security=label),
        entry("Observation", ["Patient/p1"], tags=label),
    ]
    officer = await engine.decide_response(base(["records_officer"], "HOPERAT", entries=entries))
    assert [v["grade"] for v in officer.verdicts] == [grade, grade]


async def test_codings_without_a_system_graded_as_any_systems(engine: EmbeddedEngine) -> None:
    entries = [
        entry("Condition", ["Patient/p1"], codes=[{"system": "", "code": "B20"}]),
        entry("Observation", ["Patient/p1"], codes=[{"system": "", "code": "51969-4"}]),
        # Not ICD-10-shaped: not chapter F, whatever its first letter. Not listed: not graded.
        entry("Observation", ["Patient/p1"], codes=[{"system": "", "code": "FASTING"}]),
        entry("Condition", ["Patient/p1"], codes=[{"system": "urn:other", "code": "B20"}]),
    ]
    officer = await engine.decide_response(base(["records_officer"], "HOPERAT", entries=entries))
    assert [v["grade"] for v in officer.verdicts] == [5, 5, 3, 3]


def test_every_alias_is_data_in_canonical_form() -> None:
    """The aliases are data (not rules), keyed as the policy looks them up: lower case, no '/'."""
    cfg = policy_data(POLICY_DIR)["emr"]["config"]["classification"]
    systems = cfg["code_systems"]
    assert isinstance(systems, dict)
    assert all(s == s.lower().strip(" /") for s in systems)
    for oid, alias in [
        ("urn:oid:2.16.840.1.113883.6.3", "ICD-10"),
        ("urn:oid:2.16.840.1.113883.6.90", "ICD-10"),
        ("urn:oid:2.16.156.10011.2.3.3.11", "ICD-10"),
        ("http://hl7.org/fhir/sid/icd-10-cm", "ICD-10"),
        ("urn:oid:2.16.840.1.113883.6.96", "SNOMED"),
        ("urn:oid:2.16.840.1.113883.6.1", "LOINC"),
    ]:
        assert systems[oid] == alias
    for table in cfg["sensitive_codes"].values():
        assert all(c == c.upper().replace(".", "").strip() for c in table)


# --- 2. no search oracle by graded content -------------------------------------------------------

#: Every spelling of a search that could select a grade-5 record: refused for a nurse (TREAT cap 4),
#: allowed for a physician (TREAT cap 5).
ORACLES: list[dict[str, list[str]]] = [
    {"code": ["HTTP://HL7.org/fhir/sid/icd-10|b20"]},
    {"code": ["http://hl7.org/fhir/sid/icd-10/|B20.1"]},
    {"code": ["urn:oid:2.16.840.1.113883.6.3|B201"]},
    {"code": ["urn:oid:2.16.840.1.113883.6.90|F10.2"]},
    {"code": ["URN:OID:2.16.156.10011.2.3.3.11|z21"]},
    {"code": ["F32"]},  # no system, sensitive in ICD-10: the top grade
    {"code": ["http://hl7.org/fhir/sid/icd-10|"]},  # the whole system
    {"code": ["http://snomed.info/sct|"]},
    {"code:not": ["J45"]},
    {"code:in": ["http://example.org/ValueSet/hiv"]},
    {"code:below": ["B2"]},
    {"code:above": ["http://hl7.org/fhir/sid/icd-10|B2"]},
    {"code:text": ["HIV"]},
    {"code:of-type": ["http://example.org|x|y"]},
    {"Code": ["B20"]},
    {"value-concept": ["HTTP://SNOMED.INFO/SCT|86406008"]},
    {"code-value-concept": ["http://loinc.org|51969-4$http://snomed.info/sct|10828004"]},
    {"combo-code": ["HTTP://LOINC.ORG|51969-4"]},
    {"reason-code:not": ["I10"]},
    {"category:text": ["hiv"]},
    {"_security": ["V"]},
    {"_security": ["urn:oid:2.16.840.1.113883.5.4|HIV"]},
    {"_tag": ["http://terminology.hl7.org/CodeSystem/v3-ActCode|SUD"]},
    {"_security:not": ["N"]},
    {"_tag:below": ["http://terminology.hl7.org/CodeSystem/v3-ActCode|"]},
    {"_content": ["HIV"]},
    {"_text": ["艾滋病"]},
]


@pytest.mark.parametrize("params", ORACLES, ids=[json.dumps(p, ensure_ascii=False) for p in ORACLES])
async def test_search_oracle_refused_below_its_grade(
    engine: EmbeddedEngine, params: dict[str, list[str]]
) -> None:
    nurse = await engine.decide_request(search("nurse", params))
    assert not nurse.allow and {r.rule for r in nurse.reasons} == {"search.sensitive-code"}
    physician = await engine.decide_request(search("physician", params))
    assert physician.allow


@pytest.mark.parametrize(
    "params",
    [
        {"code": ["http://hl7.org/fhir/sid/icd-10|J45,B24"]},  # the highest of a comma list
        {"code": ["J45", "urn:oid:2.16.840.1.113883.6.3|z21"]},  # and of the values
        {"code": ["|B20"]},  # explicitly no system
    ],
)
async def test_lists_take_the_highest_grade(engine: EmbeddedEngine, params: dict[str, list[str]]) -> None:
    nurse = await engine.decide_request(search("nurse", params))
    assert not nurse.allow and nurse.reasons[0].detail == {"grades": {next(iter(params)): 5}}


async def test_grade_4_searches_need_grade_4(engine: EmbeddedEngine) -> None:
    """Exact codes and labels count as their own grade: a nurse (cap 4) may search by a grade-4
    code or label, a student (TRAIN, cap 3) may not, in any spelling."""
    for params in (
        {"code": ["urn:oid:2.16.840.1.113883.6.3|f32.1"]},
        {"_security": ["R"]},
        {"_tag": ["urn:oid:2.16.840.1.113883.5.4|psy"]},
    ):
        assert (await engine.decide_request(search("nurse", params))).allow
        student = await engine.decide_request(search("student", params, purpose="TRAIN"))
        assert "search.sensitive-code" in {r.rule for r in student.reasons}, params
    # What selects nothing graded stays allowed.
    for params in (
        {"code": ["J45"]},
        {"code": ["urn:other|B20"]},
        {"code:missing": ["true"]},
        {"status:not": ["final"]},
    ):
        assert (await engine.decide_request(search("student", params, purpose="TRAIN"))).allow, params


async def test_post_search_and_batch_entries_reach_the_same_rule(engine: EmbeddedEngine) -> None:
    """POST Condition/_search: the gateway merges the form into the parameters the policy sees;
    a batch entry's search is decided as its own target."""
    # (`code:not` itself no longer reaches the policy: the search allow-list refuses it at parse,
    # tests/gateway/fhir/test_search_params.py; the policy's own rule for it still stands, below.)
    req = parse_request("POST", "Condition/_search", [("subject", "Patient/p1"), ("code", "J45")], None)
    doc = base(["nurse"], "TREAT", **req.to_policy())
    assert doc["target"]["params"]["code"] == ["J45"]
    doc["target"]["params"] = {"subject": ["Patient/p1"], "code:not": ["J45"]}
    decision = await engine.decide_request(doc)
    assert not decision.allow and {r.rule for r in decision.reasons} == {"search.sensitive-code"}
    batch = base(
        ["nurse"], "TREAT", action={"interaction": "batch", "operation": None},
        target={"type": None, "params": {}, "patients": ["Patient/p1"], "entries": [
            {"interaction": "search-type", "type": "Condition", "operation": None, "patients": ["Patient/p1"],
             "params": {"_security": ["HTTP://terminology.hl7.org/CodeSystem/v3-Confidentiality|V"]}}]},
    )  # fmt: skip
    decision = await engine.decide_request(batch)
    assert [r.rule for r in decision.reasons] == ["search.sensitive-code"]
    assert decision.reasons[0].en.startswith("Bundle.entry[0]: ")


# --- 3. refusals name only what the requester sent -----------------------------------------------


async def test_read_by_id_refusal_names_no_patient(engine: EmbeddedEngine) -> None:
    """GET Condition/c-9: the client never named the patient; the refusal must not either."""
    decision = await engine.decide_request(read("nurse", "Condition", "c-9", ["Patient/p2"]))
    assert [r.rule for r in decision.reasons] == ["care.no-relationship"]
    text = rendered(decision.reasons)
    assert "Patient/p2" not in text and "p2" not in text
    assert decision.reasons[0].detail["patients"] == ["Patient/p2"]
    # Kept for the audit record (Reason.as_dict feeds it), never rendered.
    assert decision.reasons[0].as_dict()["detail"]["patients"] == ["Patient/p2"]
    # One text, whether the request named the patient or not.
    named = await engine.decide_request(
        search("nurse", {"patient": ["Patient/p2"]})
        | {
            "target": {
                "type": "Condition",
                "patients": ["Patient/p2"],
                "params": {"patient": ["Patient/p2"]},
                "entries": [],
            }
        }
    )
    assert [(r.en, r.zh) for r in named.reasons] == [(r.en, r.zh) for r in decision.reasons]


async def test_sealed_refusal_names_no_patient_and_no_case(engine: EmbeddedEngine) -> None:
    decision = await engine.decide_request(read("nurse", "Observation", "o-1", ["Patient/sealed"]))
    assert "seal.sealed" in {r.rule for r in decision.reasons}
    text = rendered(decision.reasons)
    assert CASE not in text and "Patient/sealed" not in text
    seal = next(r for r in decision.reasons if r.rule == "seal.sealed")
    assert seal.detail == {"patients": ["Patient/sealed"], "cases": [CASE], "discreet": True}
    # The gateway's seal store calls it case_ref: the same.
    patients = dict(
        PATIENTS,
        **{"Patient/sealed": dict(PATIENTS["Patient/sealed"], seal={"authorised": [], "case_ref": "YQ-7"})},
    )
    decision = await engine.decide_request(
        read("nurse", "Observation", "o-1", ["Patient/sealed"]) | {"patients": patients}
    )
    assert "YQ-7" not in rendered(decision.reasons)


async def test_vendor_refusal_names_no_grant(engine: EmbeddedEngine) -> None:
    doc = base(["vendor"], "HOPERAT", action={"interaction": "history-instance", "operation": None},
               target={"type": "Device", "patients": [], "params": {}, "entries": []})  # fmt: skip
    decision = await engine.decide_request(doc)
    assert [r.rule for r in decision.reasons] == ["grant.out-of-scope"]
    assert "g-ven" not in rendered(decision.reasons)
    assert decision.reasons[0].detail == {"grants": ["g-ven"]}


async def test_label_removal_names_no_label(engine: EmbeddedEngine) -> None:
    doc = base(["physician"], "TREAT", action={"interaction": "update", "operation": None},
               target={"type": "Observation", "patients": ["Patient/p1"], "params": {}, "entries": [],
                       "labels_removed": ["HIV"]})  # fmt: skip
    decision = await engine.decide_request(doc)
    assert [r.rule for r in decision.reasons] == ["write.label-removed"]
    assert "HIV" not in rendered(decision.reasons)


async def test_withheld_record_names_nothing_unsent(engine: EmbeddedEngine) -> None:
    """A read by id whose answer is withheld (the root: 403) and a batch-response entry (the
    response filter's own OperationOutcome): no patient, case or record grade in either."""
    entries = [
        entry("Observation", ["Patient/p2", "Patient/sealed", "Patient/nobody"]),
        entry("Condition", ["Patient/p1"], codes=[{"system": ICD, "code": "B20"}]),
        entry("Observation", ["Patient/vip"], security=[{"system": CONF, "code": "V"}]),
    ]
    decision = await engine.decide_response(base(["nurse"], "TREAT", entries=entries))
    assert [v["keep"] for v in decision.verdicts] == [False, False, False]
    for verdict in decision.verdicts:
        reasons = [Reason.from_policy(r) for r in verdict.get("reasons") or []]
        text = rendered(reasons)
        assert "Patient/" not in text and CASE not in text and "grade 5" not in text and "5 级" not in text
    details = [r.get("detail") for r in decision.verdicts[0].get("reasons") or []]
    assert {"patients": ["Patient/sealed"], "cases": [CASE], "discreet": True} in details
    # The batch-response entries, through the response filter (gateway/fhir/filter.py).
    body: dict[str, Any] = {"resourceType": "Bundle", "type": "batch-response", "entry": [
        {"fullUrl": "Observation/o-1", "response": {"status": "200 OK"},
         "resource": {"resourceType": "Observation", "id": "o-1", "subject": {"reference": "Patient/p2"}}},
    ]}  # fmt: skip
    slots = collect(body)
    verdicts = (
        await engine.decide_response(base(["nurse"], "TREAT", entries=[s.summary() for s in slots]))
    ).verdicts
    apply_verdicts(body, slots, verdicts)
    assert (
        body["entry"][0]["response"]["status"] == "404 Not Found"
    )  # as an unknown id is (no existence oracle)
    assert "p2" not in json.dumps(body, ensure_ascii=False)


def test_operation_outcome_never_renders_detail() -> None:
    reason = Reason.from_policy(
        {"rule": "care.no-relationship", "clause": "I.4", "en": "no care relationship", "zh": "无诊疗关系",
         "detail": {"patients": ["Patient/secret-7"], "case_ref": "YQ-9"}}
    )  # fmt: skip
    assert reason.detail == {"patients": ["Patient/secret-7"], "case_ref": "YQ-9"}
    assert reason.as_dict()["detail"] == reason.detail  # the audit record keeps it
    text = rendered([reason])
    assert "secret-7" not in text and "YQ-9" not in text and '"detail"' not in text
    assert "care.no-relationship" in text and "req-1" in text and "I.4" in text
    # A reason without a detail renders and records as before.
    assert Reason("r", "en text", "中文", "I.4").as_dict() == {
        "rule": "r",
        "clause": "I.4",
        "en": "en text",
        "zh": "中文",
    }
    hash(reason)  # still usable in sets
