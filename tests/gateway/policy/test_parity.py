"""Both engines must decide identically (DESIGN.md: the same policies run in a real OPA server and
in the embedded engine, and CI proves both give the same decisions).

The table crosses every role and purpose of the policy data (plus an unknown role, a marketing
purpose and none) with interactions on targets that trigger each rule of the notice's access model
(purpose, grade, care relationship, grants in and out of their window, break-the-glass, seal,
writes, side channels), and with response entries that trigger every per-entry rule; every input
is decided by the embedded engine and by a real OPA server loading the same opa_policies/.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest

from gateway.policy import policy_data, policy_modules
from gateway.policy.embedded import EmbeddedEngine
from gateway.policy.opa_server import OpaServerEngine
from tests.conftest import POLICY_DIR

pytestmark = pytest.mark.integration

CONFIG = policy_data(POLICY_DIR)["emr"]["config"]
ROLES = sorted(CONFIG["roles"]["roles"]) + ["janitor"]
PURPOSES = sorted(CONFIG["purpose"]["purposes"]) + ["HMARKT", None]
NOW = "2026-12-01T08:00:00.000Z"
ICD = "http://hl7.org/fhir/sid/icd-10"
CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def ctx(depts: list[str], team: list[str], **extra: Any) -> dict[str, Any]:
    return {"departments": depts, "care_team": team, "flags": [], "sealed": False, "seal": None, **extra}


PATIENTS = {
    "Patient/p1": ctx(["cardiology"], ["u1"]),
    "Patient/p2": ctx(["oncology"], []),
    "Patient/vip": ctx(["cardiology"], [], flags=["VIP"]),
    "Patient/staff": ctx(["oncology"], ["u1"], flags=["staff"]),
    "Patient/sealed": ctx(
        ["cardiology"], [], sealed=True, seal={"id": "s1", "authorised": ["u-auth"], "case": "舆情-2026-031"}
    ),
}

GRANTS = {
    "rotation": {
        "id": "g-rot", "kind": "rotation", "dept": "cardiology", "purposes": ["TRAIN"],
        "start": "2026-12-01T00:00:00Z", "end": "2026-12-31T23:59:59Z",
    },
    "vendor": {
        "id": "g-ven", "kind": "vendor", "purposes": ["HOPERAT"],
        "start": "2026-11-01T00:00:00Z", "end": "2027-11-01T00:00:00Z",
        "scope": {"types": ["Device", "Encounter"], "fields": {"Device": ["id", "status"]},
                  "interactions": ["read", "search-type"]},
    },
    "export": {
        "id": "g-exp", "kind": "export", "purposes": ["HOPERAT"],
        "start": "2026-11-01T00:00:00Z", "end": "2027-01-01T00:00:00Z",
        "scope": {"types": ["Patient", "Observation"]},
    },
}  # fmt: skip

# (interaction, operation, type, params, patients, conditional)
ACTIONS: list[tuple[str, str | None, str | None, dict[str, list[str]], list[str], bool]] = [
    ("read", None, "Patient", {}, ["Patient/p1"], False),
    ("read", None, "Condition", {}, ["Patient/p2"], False),
    ("read", None, "Patient", {}, ["Patient/vip"], False),
    ("read", None, "Observation", {}, ["Patient/sealed"], False),
    ("read", None, "Patient", {}, ["Patient/nobody"], False),
    ("read", None, "Binary", {}, ["Patient/p1"], False),
    ("search-type", None, "Observation", {"patient": ["p1"]}, ["Patient/p1"], False),
    ("search-type", None, "Patient", {"name": ["王"]}, [], False),
    ("search-type", None, "Observation", {"_summary": ["count"]}, [], False),
    (
        "search-type",
        None,
        "Observation",
        {"_has:Condition:patient:code": ["B20"], "subject.name": ["王"]},
        [],
        False,
    ),
    ("search-type", None, "Device", {}, [], False),
    ("history-system", None, None, {}, [], False),
    ("create", None, "Observation", {}, ["Patient/p1"], False),
    ("update", None, "Condition", {}, ["Patient/p1"], True),
    ("delete", None, "Observation", {}, ["Patient/p2"], False),
    ("create", None, "MedicationDispense", {}, ["Patient/staff"], False),
    ("operation", "$everything", "Patient", {}, ["Patient/p1"], False),
    ("operation", "$export", None, {"_type": ["Patient"]}, [], False),
    ("graphql", "$graphql", None, {}, [], False),
    ("capabilities", None, None, {}, [], False),
]


def subject(roles: list[str], sid: str = "u1") -> dict[str, Any]:
    grants = []
    if {"student", "resident"} & set(roles):
        grants.append(dict(GRANTS["rotation"], operator=sid))
    if "vendor" in roles:
        grants.append(dict(GRANTS["vendor"], operator=sid))
    if "records_officer" in roles:
        grants.append(dict(GRANTS["export"], operator=sid))
    return {"id": sid, "name": "测试", "roles": roles, "dept": "cardiology", "org": "h1", "grants": grants}


def base(roles: list[str], purpose: str | None, **extra: Any) -> dict[str, Any]:
    doc = {
        "subject": subject(roles),
        "purpose": purpose,
        "break_glass": None,
        "time": NOW,
        "request_id": "parity",
        "action": {"interaction": "read", "method": "GET", "level": "instance", "operation": None, "conditional": False},
        "target": {"type": "Patient", "id": "p1", "compartment": None, "patients": ["Patient/p1"],
                   "params": {}, "if_none_exist": {}, "entries": []},
        "patients": PATIENTS,
    }  # fmt: skip
    doc.update(extra)
    return doc


def request_inputs() -> list[dict[str, Any]]:
    out = []
    for role, purpose, (interaction, op, rtype, params, pts, cond) in itertools.product(
        ROLES, PURPOSES, ACTIONS
    ):
        out.append(
            base(
                [role],
                purpose,
                action={"interaction": interaction, "method": "GET", "level": "type", "operation": op,
                        "conditional": cond},
                target={"type": rtype, "id": None, "compartment": None, "patients": pts, "params": params,
                        "if_none_exist": {}, "entries": []},
            )
        )  # fmt: skip
    # Break-the-glass: with and without a reason, on an unrelated and on a sealed patient.
    for role, purpose, reason, patient in itertools.product(
        ["physician", "nurse", "resident", "pharmacist"],
        ["TREAT", "ETREAT", "BTG"],
        [None, "", "arrest"],
        ["Patient/p2", "Patient/sealed"],
    ):
        doc = base(
            [role],
            purpose,
            target={"type": "Observation", "patients": [patient], "params": {}, "entries": []},
        )
        doc["break_glass"] = None if reason is None else {"reason": reason}
        out.append(doc)
    # Grants at the edges of their window, to the second.
    for role, t in itertools.product(
        ["student", "resident", "vendor", "records_officer"],
        ["2026-11-30T23:59:59Z", "2026-12-01T00:00:00Z", "2026-12-31T23:59:58.999Z", "2026-12-31T23:59:59Z",
         "2027-01-01T00:00:00Z", "2027-11-01T00:00:00Z"],
    ):  # fmt: skip
        purpose = {"vendor": "HOPERAT", "records_officer": "HOPERAT"}.get(role, "TRAIN")
        out.append(base([role], purpose, time=t))
        out.append(
            base([role], purpose, time=t, action={"interaction": "operation", "operation": "$export"},
                 target={"type": None, "patients": [], "params": {"_type": ["Patient,Observation"]}, "entries": []})
        )  # fmt: skip
    # Several roles; seal-authorised operators; batches and transactions.
    for roles in (["nurse", "pharmacist"], ["student", "resident"], ["vendor", "records_officer"],
                  ["physician", "researcher"], ["security_officer", "physician"]):  # fmt: skip
        for purpose in ("TREAT", "TRAIN", "HRESCH", "HOPERAT"):
            for rtype, pts in (("Condition", ["Patient/p2"]), ("MedicationRequest", ["Patient/p2"]),
                               ("Condition", ["Patient/p1"]), ("Device", [])):  # fmt: skip
                out.append(
                    base(roles, purpose, target={"type": rtype, "patients": pts, "params": {}, "entries": []})
                )
    authorised = base(
        ["records_officer"], "HOPERAT", target={"type": "Patient", "patients": ["Patient/sealed"]}
    )
    authorised["subject"]["id"] = "u-auth"
    out.append(authorised)
    entries = [
        {"interaction": "create", "type": "Observation", "operation": None, "params": {}, "patients": ["Patient/p1"]},
        {"interaction": "read", "type": "Condition", "operation": None, "params": {}, "patients": ["Patient/p2"]},
        {"interaction": "delete", "type": "Patient", "operation": None, "params": {}, "patients": ["Patient/p1"]},
        {"interaction": "operation", "type": "Patient", "operation": "$everything", "params": {},
         "patients": ["Patient/sealed"]},
        {"interaction": "search-type", "type": "Observation", "operation": None, "params": {"subject.name": ["x"]},
         "patients": [], "conditional": True},
    ]  # fmt: skip
    for roles, kind in itertools.product((["pharmacist"], ["nurse"], ["physician"], ["records_officer"]),
                                         ("batch", "transaction")):  # fmt: skip
        for chosen in (entries[:1], entries):
            out.append(
                base(roles, "TREAT", action={"interaction": kind, "operation": None},
                     target={"type": None, "params": {}, "patients": ["Patient/p1", "Patient/p2"], "entries": chosen})
            )  # fmt: skip
    # Searches by graded content in every spelling (canonical systems, codes, modifiers, lists,
    # composites, labels, text), on their own and as batch entries.
    for roles, purpose, params in itertools.product(
        (["nurse"], ["physician"], ["student"], ["researcher"], ["pharmacist"]), ("TREAT", "TRAIN", "HRESCH"),
        GRADED_SEARCHES,
    ):  # fmt: skip
        out.append(
            base(roles, purpose, action={"interaction": "search-type", "operation": None},
                 target={"type": "Condition", "patients": ["Patient/p1"], "params": params, "entries": []})
        )  # fmt: skip
    for roles in (["nurse"], ["physician"]):
        out.append(
            base(roles, "TREAT", action={"interaction": "batch", "operation": None},
                 target={"type": None, "params": {}, "patients": ["Patient/p1"],
                         "entries": [{"interaction": "search-type", "type": "Observation", "operation": None,
                                      "params": p, "patients": ["Patient/p1"]} for p in GRADED_SEARCHES[:8]]})
        )  # fmt: skip
    # A write removing labels; a vendor out of its agreement's scope (reasons with a detail).
    out.append(
        base(["nurse"], "TREAT", action={"interaction": "update", "operation": None},
             target={"type": "Observation", "patients": ["Patient/p1"], "params": {}, "entries": [],
                     "labels_removed": ["HIV"]})
    )  # fmt: skip
    # Odd shapes: where regorus and OPA differ most (missing or mistyped fields must refuse alike).
    out.append(
        base(["nurse"], "TREAT", action={"interaction": "search-type"},
             target={"type": "Condition", "patients": [], "params": {"code": "B20", "_tag": [7], "value-concept": [None]}})
    )  # fmt: skip
    odd = base(["student"], "TRAIN")
    odd["subject"]["grants"] = [{k: v for k, v in GRANTS["rotation"].items() if k != "kind"}, "x", None]
    out.append(odd)
    out.append(base(["physician"], 7))
    out.append(
        base(
            ["physician"],
            "ETREAT",
            break_glass={"reason": 5},
            target={"type": "Patient", "patients": ["Patient/p2"]},
        )
    )
    out.append(
        base(["physician"], "TREAT", patients={"Patient/p1": {"departments": None, "care_team": None}})
    )
    out.append(base(["physician"], "TREAT", subject={"id": "u1", "roles": "physician"}))
    out.append(base(["physician"], "TREAT", action={}, target={}))
    out.append(
        base(
            ["physician"],
            "TREAT",
            target={"type": "Patient", "patients": [None, 3, "Patient/p1"], "entries": [None]},
        )
    )
    return out


#: Searches that select by graded content (opa_policies/emr/sidechannel), and two that do not.
GRADED_SEARCHES: list[dict[str, list[str]]] = [
    {"code": ["B20"]}, {"code": ["b20.1"]}, {"code": ["HTTP://HL7.org/fhir/sid/icd-10/|B201"]},
    {"code": ["urn:oid:2.16.840.1.113883.6.3|F10.2"]}, {"code": ["http://hl7.org/fhir/sid/icd-10|F32"]},
    {"code": ["J45,http://loinc.org|51969-4"]}, {"code:not": ["J45"]}, {"code:text": ["hiv"]},
    {"code:in": ["http://example.org/vs"]}, {"code:below": ["B2"]}, {"code:missing": ["true"]},
    {"code": ["http://snomed.info/sct|"]}, {"code": ["urn:other|B20"]}, {"code": ["|Z21"]}, {"category": ["food"]},
    {"value-concept": ["86406008"]}, {"code-value-concept": ["http://loinc.org|51969-4$x"]},
    {"_security": ["R"]}, {"_security": ["V"]}, {"_tag": ["urn:oid:2.16.840.1.113883.5.4|hiv"]},
    {"_security:not": ["N"]}, {"_content": ["HIV"]}, {"Reason-Code": ["B24"]},
    {"status:not": ["final"], "code": [""], "_security": ["|"]},
]  # fmt: skip


def entry(rtype: str, patients: list[str], security=(), codes=(), tags=()) -> dict[str, Any]:
    return {
        "type": rtype, "id": f"{rtype}-1", "patient": patients[0] if patients else None, "patients": patients,
        "security": list(security), "tags": list(tags), "codes": list(codes),
        "kind": "entry", "path": "entry[0].resource", "search_mode": "match", "bundle_type": "searchset",
    }  # fmt: skip


ENTRIES = [
    entry("Patient", ["Patient/p1"]),
    entry("Patient", ["Patient/p2"]),
    entry("Condition", ["Patient/p1"], codes=[{"system": ICD, "code": "B20.1"}]),
    entry("Condition", ["Patient/p1"], codes=[{"system": ICD, "code": "F32"}]),
    entry("Condition", ["Patient/p1"], codes=[{"system": ICD, "code": "F10.2"}]),
    entry("Observation", ["Patient/p1"], security=[{"system": CONF, "code": "R"}]),
    entry("Observation", ["Patient/p1"], security=[{"system": CONF, "code": "V"}]),
    entry("Observation", ["Patient/p1"], tags=[{"system": ACT, "code": "PSY"}]),
    entry("Observation", ["Patient/p1"], codes=[{"system": "http://loinc.org", "code": "51969-4"}]),
    entry("Observation", ["Patient/vip"]),
    entry("Encounter", ["Patient/staff"]),
    entry("Observation", ["Patient/sealed"]),
    entry("Observation", ["Patient/nobody"]),
    entry("MedicationRequest", ["Patient/p2"]),
    entry("Binary", ["Patient/p1"]),
    entry("Practitioner", []),
    entry("Device", []),
    entry("Encounter", ["Patient/p1"]),
    entry("Observation", ["Patient/p1", "Patient/p2"]),
]

#: Graded content in other spellings of the same systems (canonical form), without a system, and
#: entries with several patients (sealed, unrelated, unknown: one reason per concern, with detail).
VARIANT_ENTRIES = [
    entry("Condition", ["Patient/p1"], codes=[{"system": "HTTP://HL7.org/fhir/sid/icd-10", "code": "b20"}]),
    entry("Condition", ["Patient/p1"], codes=[{"system": "http://hl7.org/fhir/sid/icd-10/", "code": "F102"}]),
    entry("Condition", ["Patient/p1"], codes=[{"system": "urn:oid:2.16.840.1.113883.6.3", "code": "F32.1"}]),
    entry("Condition", ["Patient/p1"], codes=[{"system": "urn:oid:2.16.840.1.113883.6.90", "code": "Z21"}]),
    entry("Condition", ["Patient/p1"], codes=[{"system": "", "code": "B20"}, {"system": "", "code": "FOOD"}]),
    entry(
        "Condition",
        ["Patient/p1"],
        codes=[{"code": "A51"}, {"system": 7, "code": "B20"}, {"system": ICD, "code": 3}],
    ),
    entry(
        "Observation", ["Patient/p1"], codes=[{"system": "URN:OID:2.16.840.1.113883.6.1", "code": "51969-4"}]
    ),
    entry(
        "Observation", ["Patient/p1"], security=[{"system": "urn:oid:2.16.840.1.113883.5.25", "code": "r"}]
    ),
    entry("Observation", ["Patient/p1"], tags=[{"system": "http://hl7.org/fhir/v3/ActCode", "code": "HIV"}]),
    entry("Observation", ["Patient/p1"], security=[{"system": "", "code": "V"}, {"code": "PSY"}, "x"]),
    entry("Observation", ["Patient/p2", "Patient/sealed", "Patient/nobody"]),
    entry("Observation", ["Patient/vip", "Patient/p2"], codes=[{"system": ICD, "code": "B24"}]),
]


def response_inputs() -> list[dict[str, Any]]:
    out = []
    for role, purpose in itertools.product(ROLES, PURPOSES):
        out.append(base([role], purpose, entries=ENTRIES))
    for roles in (["student", "researcher"], ["student", "resident"], ["nurse", "pharmacist"],
                  ["vendor", "records_officer"]):  # fmt: skip
        for purpose in ("TREAT", "TRAIN", "HOPERAT"):
            out.append(base(roles, purpose, entries=ENTRIES))
    for role, purpose in itertools.product(["physician", "nurse"], ["ETREAT", "BTG"]):
        out.append(base([role], purpose, break_glass={"reason": "arrest"}, entries=ENTRIES))
    authorised = base(["physician"], "TREAT", entries=ENTRIES)
    authorised["subject"]["id"] = "u-auth"
    out.append(authorised)
    out.append(
        base(["physician"], None, action={"interaction": "capabilities"}, target={"type": None},
             entries=[entry("CapabilityStatement", [])])
    )  # fmt: skip
    out.append(base(["physician"], "TREAT", entries=[]))
    for roles, purpose in itertools.product((["nurse"], ["physician"], ["student"], ["records_officer"]),
                                            ("TREAT", "TRAIN", "HOPERAT")):  # fmt: skip
        out.append(base(roles, purpose, entries=VARIANT_ENTRIES))
    # Odd shapes: an entry the policy cannot read gets no verdict (the gateway then refuses).
    out.append(
        base(
            ["physician"],
            "TREAT",
            entries=[
                None,
                {"type": "Patient"},
                dict(ENTRIES[0], patients="Patient/p1"),
                # fields that are not arrays: no coding of theirs graded, no evaluation error
                dict(ENTRIES[0], codes="B20", security={"x": {"system": CONF, "code": "V"}}, tags=7),
            ],
        )
    )
    out.append(base(["physician"], "TREAT", entries=ENTRIES[:3], patients={"Patient/p1": {"flags": None}}))
    return out


def normalise(decision: Any) -> str:
    """Reasons are a set in the policy: compare them order-free."""

    def fix(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {
                k: (sorted((fix(x) for x in v), key=json.dumps) if k == "reasons" else fix(v))
                for k, v in obj.items()
            }
        if isinstance(obj, list):
            return [fix(x) for x in obj]
        return obj

    return json.dumps(fix(decision), sort_keys=True, ensure_ascii=False)


async def test_engines_decide_identically(opa_server: Any) -> None:
    embedded = EmbeddedEngine(POLICY_DIR, timeout=5)
    opa = OpaServerEngine(opa_server.url, timeout=5)
    await embedded.start()
    await opa.start()
    try:
        assert embedded.revision == opa.revision
        cases = [("emr/request/decision", i) for i in request_inputs()] + [
            ("emr/response/decision", i) for i in response_inputs()
        ]
        assert len(cases) > 500
        allowed = kept = dropped = 0
        for path, doc in cases:
            a = await embedded.evaluate(path, doc)
            b = await opa.evaluate(path, doc)
            assert normalise(a) == normalise(b), f"engines disagree on {path} for {json.dumps(doc)[:400]}"
            allowed += bool(a.get("allow"))
            for v in a.get("verdicts", []):
                kept += v["keep"]
                dropped += not v["keep"]
        # The table must exercise both outcomes, not only refusals.
        requests = sum(1 for p, _ in cases if p.startswith("emr/request"))
        assert 20 < allowed < requests - 100
        assert kept > 100 and dropped > 100
    finally:
        await opa.close()


def test_policies_reference_other_packages_by_full_path() -> None:
    """`import data.emr.x` then `x.rule` makes regorus evaluate the whole package x on each
    reference, and inside functions it can answer undefined where OPA answers a value: policy
    modules refer to other packages as data.emr.<package>.<name> (opa_policies/README.md)."""
    offenders = [
        name for name, text in policy_modules(POLICY_DIR).items() if re.search(r"^import data\.", text, re.M)
    ]
    assert offenders == []


async def test_embedded_engine_faults_are_refusals(tmp_path) -> None:
    """A policy that raises (a builtin error) or a result that is undefined must never read as allow."""
    (tmp_path / "emr" / "request").mkdir(parents=True)
    (tmp_path / "emr" / "request" / "r.rego").write_text(
        'package emr.request\nimport rego.v1\ndecision := {"allow": true} if time.parse_rfc3339_ns(input.time) > 0\n'
    )
    engine = EmbeddedEngine(tmp_path, timeout=2)
    await engine.start()
    from gateway.policy import PolicyError

    with pytest.raises(PolicyError):  # malformed timestamp: regorus raises, OPA would be undefined
        await engine.decide_request({"time": "not-a-time"})
    with pytest.raises(PolicyError, match="undefined"):  # before 1970: the rule's body is false
        await engine.decide_request({"time": "1960-01-01T00:00:00Z"})
    with pytest.raises(PolicyError):  # no response rule at all
        await engine.decide_response({"entries": []})
    assert (await engine.decide_request({"time": "2026-12-01T00:00:00Z"})).allow
