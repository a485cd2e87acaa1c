"""Upstream refusals repeat only what the request said (issue "nothing leaks", class 7; I.4).

The messages below are HAPI FHIR JPA 8.8's own wording (recorded from the reference server)."""

from __future__ import annotations

import copy
import json

from gateway.fhir.outcomes import WITHHELD_TEXT, screen_upstream_outcome

HAPI_DELETE_CONFLICT = {
    "resourceType": "OperationOutcome",
    "issue": [
        {
            "severity": "error",
            "code": "processing",
            "diagnostics": "HAPI-0515: Unable to delete Patient/1052 because at least one resource has a "
            "reference to this resource. First reference found was resource Condition/2301 in path "
            "Condition.subject",
        }
    ],
}


def test_a_message_naming_another_record_is_withheld_and_kept_for_the_audit() -> None:
    body = copy.deepcopy(HAPI_DELETE_CONFLICT)
    withheld = screen_upstream_outcome(body, "/fhir/Patient/1052 ", 409)
    assert "Condition/2301" not in json.dumps(body) and body["issue"][0]["details"]["text"] == WITHHELD_TEXT
    assert body["issue"][0]["code"] == "processing" and body["issue"][0]["severity"] == "error"
    assert withheld and "Condition/2301" in withheld[0]


def test_a_message_repeating_only_what_was_said_is_kept() -> None:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "not-found",
                "diagnostics": "HAPI-2001: Resource Observation/abc-123 is not known",
            }
        ],
    }
    assert screen_upstream_outcome(body, "/fhir/Observation/abc-123 ", 404) == []
    assert body["issue"][0]["diagnostics"].endswith("is not known")


def test_an_id_without_its_type_counts_too() -> None:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "conflict", "details": {"text": "matched 73214 and 73215"}}],
    }
    assert screen_upstream_outcome(body, "/fhir/Observation?code=x ", 412)
    assert "73214" not in json.dumps(body)


def test_failed_entries_of_a_batch_response_are_screened_successful_ones_are_not() -> None:
    ok = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "information",
                "code": "informational",
                "diagnostics": "Successfully created resource Observation/9911/_history/1",
            }
        ],
    }
    bad = copy.deepcopy(HAPI_DELETE_CONFLICT)
    body = {
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": [
            {"response": {"status": "201 Created", "outcome": ok}},
            {"response": {"status": "409 Conflict", "outcome": bad}},
        ],
    }
    withheld = screen_upstream_outcome(body, "/fhir {}", 200)
    assert len(withheld) == 1 and "Condition/2301" not in json.dumps(body)
    assert "Observation/9911" in json.dumps(body)  # the requester's own new record


def test_a_success_outcome_is_left_alone() -> None:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "information",
                "code": "informational",
                "diagnostics": "Successfully deleted 1 resource(s) in 312ms",
            }
        ],
    }
    assert screen_upstream_outcome(body, "/fhir/Observation/x ", 200) == []
