"""/admin/alerts on a real app (II.3): newest first."""

from __future__ import annotations

from gateway.runtime import GATEWAY
from tests.conftest import SEC, Admin

# --- alerts (II.3) ----------------------------------------------------------------------------------


async def test_alerts_listed_newest_first(admin: Admin) -> None:
    store = admin.client.app[GATEWAY].store
    for i in range(3):
        await store.insert_alert(
            {
                "event": "bulk-read",
                "severity": "high",
                "operator": "u-nurse-001",
                "patients": [f"Patient/p{i}"],
            }
        )
    status, body = await admin.get("/admin/alerts", SEC, limit="2")
    assert status == 200 and [a["patients"] for a in body["alerts"]] == [["Patient/p2"], ["Patient/p1"]]
    assert (await admin.get("/admin/alerts", SEC, limit="0"))[0] == 400
    assert (await admin.get("/admin/alerts", SEC, limit="x"))[0] == 400
    assert admin.last_audit()["extra"]["admin"]["action"] == "admin.alerts.list"
