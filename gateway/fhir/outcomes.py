"""What the upstream says when it refuses, and what "not there" looks like (I.4: no oracle).

Two oracles live here:

- **Existence.** ``GET Condition/<id>`` of a record the operator may not see used to answer 403,
  and of an id that does not exist 404: trying ids told which records exist (and, from the rule,
  that one is graded high). Now both — a record withheld by the response decision and one the
  upstream does not have (404, or 410 for a deleted one) — get the same 404 ``not available``,
  whose text says it may be either; the audit record keeps which one it was and why.
- **Upstream messages.** A FHIR server's OperationOutcome may name records the request did not:
  HAPI refusing a delete names "the first resource found with a reference to this one", a
  conditional update that matched several names them. Such a message is not passed on: an issue's
  ``diagnostics`` and ``details.text`` survive only when every reference they contain is one the
  request itself named; otherwise they are replaced by a pointer to the audit record, which keeps
  the original (for the IT desk), truncated.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.errors import GatewayError, error, operation_outcome
from gateway.fhir.resource_types import RESOURCE_TYPES

NOT_AVAILABLE_RULE = "fhir.not-available"
#: Instance interactions whose "no" must look like "not there".
INSTANCE_READS = frozenset({"read", "vread", "history-instance"})
_REFERENCE = re.compile(r"\b([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})")
#: Long runs of id characters (uuids, HAPI numeric ids) that may name a record without its type.
_ID_LIKE = re.compile(
    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b|(?<!HAPI-)\b\d{3,}\b"
)
WITHHELD_TEXT = (
    "该 FHIR 服务器的说明涉及本请求未提及的记录,已隐去;原文见本请求编号对应的审计记录 / "
    "the FHIR server's message names records this request did not and is withheld; "
    "the audit record of this request id keeps it"
)
KEPT_CHARS = 2000


def not_available() -> GatewayError:
    return error(
        status=404,
        code="not-found",
        rule=NOT_AVAILABLE_RULE,
        en="no such record, or not one you may see for this purpose; the IT desk can tell which "
        "from the audit record of this request id",
        zh="没有该记录,或您在当前使用目的下无权查看;信息科可凭本请求编号在审计记录中查明原因",
        clause="I.4",
    )


#: A batch/transaction entry answered "not available": the status and outcome of an unknown id.
NOT_AVAILABLE_STATUS = "404 Not Found"


def not_available_outcome() -> dict[str, Any]:
    """The entry outcome of a record withheld or not there (no request id: it is the whole answer's)."""
    outcome = operation_outcome(not_available(), "-")
    for issue in outcome["issue"]:
        issue["diagnostics"] = f"rule={NOT_AVAILABLE_RULE} clause=I.4"
    return outcome


def _named(text: str, said: str) -> bool:
    """True when every record reference (and every id-like token) in ``text`` is in ``said``."""
    for match in _REFERENCE.finditer(text):
        if match.group(1) in RESOURCE_TYPES and match.group(2) not in said:
            return False
    return all(token in said for token in _ID_LIKE.findall(text))


def screen_upstream_outcome(body: Any, said: str, status: int) -> list[str]:
    """Withhold, in place, every message of an upstream refusal — an OperationOutcome answering
    with an error status, a failed entry of a batch/transaction response, a search page's outcome
    entry — that names what the request did not; return the withheld originals (truncated) for
    the audit record. (A success's own outcome, "deleted 1 resource", is left alone.)"""
    withheld: list[str] = []
    for outcome in _outcomes(body, failed=status >= 400):
        for issue in outcome.get("issue") or []:
            if not isinstance(issue, dict):
                continue
            texts = [issue.get("diagnostics")]
            details = issue.get("details")
            if isinstance(details, dict):
                texts.append(details.get("text"))
            if all(not isinstance(t, str) or _named(t, said) for t in texts):
                continue
            withheld.extend(t[:KEPT_CHARS] for t in texts if isinstance(t, str))
            issue.pop("diagnostics", None)
            issue["details"] = {"text": WITHHELD_TEXT}
    return withheld


def _outcomes(body: Any, failed: bool) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if not isinstance(body, dict):
        return found
    if body.get("resourceType") == "OperationOutcome":
        if failed:
            found.append(body)
    elif body.get("resourceType") == "Bundle":
        for entry in body.get("entry") or []:
            if not isinstance(entry, dict):
                continue
            raw = entry.get("response")
            response: dict[str, Any] = raw if isinstance(raw, dict) else {}
            entry_failed = not str(response.get("status", "2")).strip().startswith("2")
            outcome_entry = (entry.get("search") or {}).get("mode") == "outcome"
            found.extend(_outcomes(entry.get("resource"), entry_failed or outcome_entry))
            found.extend(_outcomes(response.get("outcome"), entry_failed))
    return found
