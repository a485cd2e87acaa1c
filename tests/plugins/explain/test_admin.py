"""/admin/policy/explain (I.3): whatever controls are loaded, the patients explained about are in the
input and audited as targets (probing a patient through explain is as traceable as a read, II.2)."""

from __future__ import annotations

from typing import Any

from gateway.app import create_app
from tests.conftest import SEC, UNREACHABLE, Admin


async def test_explained_patients_are_audited_with_any_controls(
    aiohttp_client: Any, make_settings: Any, idp: Any
) -> None:
    settings = make_settings(UNREACHABLE, plugins=("purpose",))  # no care, no seal facts
    adm = Admin(await aiohttp_client(create_app(settings)), settings, idp)
    body = {
        "operator": {"id": "n-1", "roles": ["nurse"], "dept": "cardiology"},
        "purpose": "TREAT",
        "request": {"method": "GET", "url": "Condition?patient=Patient/p4"},
        "resources": [{"resourceType": "Condition", "id": "c9", "subject": {"reference": "Patient/p9"}}],
    }
    status, out = await adm.post("/admin/policy/explain", SEC, body)
    assert status == 200
    assert set(out["input"]["patients"]) == {"Patient/p4", "Patient/p9"}
    record = adm.last_audit()
    assert set(record["patients_targeted"]) == {"Patient/p4", "Patient/p9"}
