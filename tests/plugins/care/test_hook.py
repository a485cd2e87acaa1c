"""The care relationship's facts (I.4), from Encounters, CareTeams and the Patient."""

from __future__ import annotations

from plugins.care.hook import DEPARTMENT_SYSTEM, FLAG_SYSTEM, OPERATOR_SYSTEM, facts_from


def bundle(*resources: dict) -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def enc(dept: str, status: str = "finished") -> dict:
    return {
        "resourceType": "Encounter",
        "status": status,
        "serviceType": {"coding": [{"system": DEPARTMENT_SYSTEM, "code": dept}]},
    }


def team(member: str, status: str = "active", end: str | None = None) -> dict:
    ct = {
        "resourceType": "CareTeam",
        "status": status,
        "participant": [{"member": {"identifier": {"system": OPERATOR_SYSTEM, "value": member}}}],
    }
    if end:
        ct["period"] = {"end": end}
    return ct


def test_departments_team_and_flags():
    patient = {
        "resourceType": "Patient",
        "meta": {"tag": [{"system": FLAG_SYSTEM, "code": "VIP"}, {"system": "other", "code": "VIP"}]},
    }
    facts = facts_from(
        bundle(enc("cardiology"), enc("oncology")), bundle(team("dr-li")), patient, "2026-12-01T00:00:00Z"
    )
    assert facts == {"departments": ["cardiology", "oncology"], "care_team": ["dr-li"], "flags": ["VIP"]}


def test_void_encounters_and_ended_care_teams_make_no_relationship():
    """Security review: every Encounter ever and every CareTeam, whatever its status, added access."""
    facts = facts_from(
        bundle(enc("psychiatry", "entered-in-error"), enc("oncology", "cancelled")),
        bundle(
            team("dr-old", end="2025-01-01T00:00:00Z"),
            team("dr-gone", status="inactive"),
            team("dr-now", end="2027-01-01T00:00:00Z"),
        ),
        {"resourceType": "Patient"},
        "2026-12-01T00:00:00Z",
    )
    assert facts["departments"] == [] and facts["care_team"] == ["dr-now"]
