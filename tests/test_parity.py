"""Both engines must decide identically (DESIGN.md: the same policies run in a real OPA server and
in the embedded engine, and CI proves both give the same decisions).

The table crosses every role, purpose and interaction kind of the access data with targets and
response entries that trigger each rule; every input is decided by the embedded engine and by a
real OPA server loading the same opa_policies/.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from gateway.policy import policy_data
from gateway.policy.embedded import EmbeddedEngine
from gateway.policy.opa_server import OpaServerEngine
from tests.conftest import POLICY_DIR

pytestmark = pytest.mark.integration

ACCESS = policy_data(POLICY_DIR)["emr"]["config"]["access"]
ROLES = sorted(ACCESS["roles"]) + ["janitor"]
PURPOSES = sorted(ACCESS["purposes"]) + ["HMARKT", None]
V = {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "V"}

ACTIONS: list[tuple[str, str | None, str | None, dict[str, list[str]]]] = [
    ("read", None, "Patient", {}),
    ("read", None, "Condition", {}),
    ("search-type", None, "Observation", {"patient": ["p1"]}),
    ("search-type", None, "Observation", {"_summary": ["count"]}),
    ("search-type", None, "Device", {}),
    ("create", None, "Observation", {}),
    ("delete", None, "Observation", {}),
    ("operation", "$everything", "Patient", {}),
    ("operation", "$export", None, {}),
    ("graphql", "$graphql", None, {}),
    ("capabilities", None, None, {}),
    ("history-system", None, None, {}),
]


def request_inputs() -> list[dict[str, Any]]:
    out = []
    for role, purpose, (interaction, op, rtype, params) in itertools.product(ROLES, PURPOSES, ACTIONS):
        out.append(
            {
                "subject": {"id": "u1", "roles": [role], "dept": "cardiology"},
                "purpose": purpose,
                "action": {"interaction": interaction, "operation": op, "method": "GET", "level": "type"},
                "target": {"type": rtype, "id": None, "params": params, "entries": [], "patients": []},
                "time": "2026-12-01T08:00:00.000Z",
            }
        )
    for roles in (["pharmacist"], ["nurse"], ["student", "resident"], ["records_officer"]):
        out.append(
            {
                "subject": {"id": "u2", "roles": roles},
                "purpose": "TREAT",
                "action": {"interaction": "transaction", "operation": None},
                "target": {
                    "type": None,
                    "params": {},
                    "patients": [],
                    "entries": [
                        {"interaction": "create", "type": "Observation", "operation": None, "params": {}},
                        {"interaction": "read", "type": "Condition", "operation": None, "params": {}},
                        {"interaction": "delete", "type": "Patient", "operation": None, "params": {}},
                        {
                            "interaction": "operation",
                            "type": "Patient",
                            "operation": "$everything",
                            "params": {},
                        },
                    ],
                },
            }
        )
    return out


def response_inputs() -> list[dict[str, Any]]:
    entries = [
        {"type": t, "id": f"{t}-1", "patient": "Patient/p1", "security": sec, "codes": [], "kind": "entry"}
        for t in ("Patient", "Condition", "Observation", "MedicationRequest", "Device")
        for sec in ([], [V])
    ]
    out = []
    for role, purpose in itertools.product(ROLES, PURPOSES):
        out.append({"subject": {"id": "u1", "roles": [role]}, "purpose": purpose, "entries": entries})
    out.append(
        {"subject": {"id": "u1", "roles": ["student", "researcher"]}, "purpose": "TRAIN", "entries": entries}
    )
    out.append(
        {"subject": {"id": "u1", "roles": ["student", "resident"]}, "purpose": "TRAIN", "entries": entries}
    )
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
        allowed = 0
        for path, doc in cases:
            a = await embedded.evaluate(path, doc)
            b = await opa.evaluate(path, doc)
            assert normalise(a) == normalise(b), f"engines disagree on {path} for {json.dumps(doc)[:400]}"
            allowed += bool(a.get("allow"))
        # The table must exercise both outcomes, not only refusals.
        assert 20 < allowed < len(cases) - 100
    finally:
        await opa.close()


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
