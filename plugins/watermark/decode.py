"""Tracing a leaked file back to its disclosures (II.2): every watermark mark and tag in a FHIR
JSON document, NDJSON or pasted text, checked against the secret and looked up in the audit
store. Runs without the gateway (``emrguard watermark decode``); the marks are made in codec.py.
"""

from __future__ import annotations

import codecs
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from plugins.watermark.codec import HEX_ID_RE, MARK_CHARS, TAG_SYSTEM, Codec, unescape


@dataclass
class Finding:
    kind: str  # mark | tag
    status: str  # valid | forged | damaged | unverified (a tag: it has no MAC)
    disclosure_id: str | None
    where: str  # JSON path, "line N" of plain text
    resource: str | None = None  # "Type/id" of the resource it sits in (FHIR JSON input)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "status": self.status, "where": self.where}
        key = "claimed_disclosure_id" if self.status in ("forged", "damaged") else "disclosure_id"
        if self.disclosure_id is not None:
            out[key] = self.disclosure_id
        if self.resource:
            out["resource"] = self.resource
        return out


def read_input(data: bytes) -> str:
    """Bytes of a saved file or a paste as text (UTF-8, or UTF-16 with a byte-order mark)."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    return data.decode("utf-8-sig", errors="replace")


def scan(text: str, codec: Codec) -> list[Finding]:
    """Every mark and watermark tag in a FHIR JSON document, NDJSON, or plain text."""
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            doc = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            pass
        else:
            found: list[Finding] = []
            _scan_json(doc, "$", None, codec, found)
            return found
        lines = text.splitlines()
        docs: list[tuple[int, Any]] = []
        try:
            docs = [(n, orjson.loads(line)) for n, line in enumerate(lines, 1) if line.strip()]
        except orjson.JSONDecodeError:
            docs = []
        if docs:
            found = []
            for n, doc in docs:
                _scan_json(doc, f"line {n}: $", None, codec, found)
            return found
    return _scan_text(text, codec)


def _scan_text(text: str, codec: Codec) -> list[Finding]:
    text = unescape(text)
    return [
        Finding("mark", m.status, m.disclosure_id, f"line {text.count(chr(10), 0, m.start) + 1}")
        for m in codec.find(text)
    ]


def _scan_json(node: Any, path: str, resource: str | None, codec: Codec, found: list[Finding]) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("resourceType"), str):
            resource = node["resourceType"] + (f"/{node['id']}" if isinstance(node.get("id"), str) else "")
            meta = node.get("meta")
            tags = meta.get("tag") if isinstance(meta, dict) else None
            for i, tag in enumerate(tags if isinstance(tags, list) else []):
                if isinstance(tag, dict) and tag.get("system") == TAG_SYSTEM:
                    code = tag.get("code")
                    ok = isinstance(code, str) and bool(HEX_ID_RE.match(code))
                    found.append(
                        Finding(
                            "tag",
                            "unverified" if ok else "damaged",
                            code if isinstance(code, str) else None,
                            f"{path}.meta.tag[{i}]",
                            resource,
                        )
                    )
        for key, value in node.items():
            _scan_json(value, f"{path}.{key}", resource, codec, found)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _scan_json(value, f"{path}[{i}]", resource, codec, found)
    elif isinstance(node, str) and (set(node) & MARK_CHARS or "\\u" in node or "&#" in node):
        for m in codec.find(node):
            found.append(Finding("mark", m.status, m.disclosure_id, path, resource))


# --- tracing to the audit record --------------------------------------------------------------------

#: What the decoder reports of an audit record (gateway/audit/record.py build_record).
TRACE_FIELDS = (
    "request_id",
    "time",
    "operator",
    "operator_name",
    "roles",
    "dept",
    "org",
    "purpose",
    "client_address",
    "method",
    "path",
    "query",
    "interaction",
    "resource_type",
    "patients_disclosed",
    "resources_disclosed",
    "decision",
    "status",
)


def audit_records(db: str | Path, request_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The audit records of these request ids, read-only from the SQLite store."""
    if not request_ids:
        return {}
    conn = sqlite3.connect(f"file:{quote(str(Path(db).resolve()))}?mode=ro", uri=True)
    try:
        marks = ",".join("?" * len(request_ids))
        rows = conn.execute(
            f"SELECT request_id, seq, record FROM audit WHERE request_id IN ({marks})", request_ids
        ).fetchall()
    finally:
        conn.close()
    return {rid: {"audit_seq": seq, **orjson.loads(record)} for rid, seq, record in rows}


def decode(text: str, secret: str, db: str | Path) -> tuple[dict[str, Any], bool]:
    """The decoder's answer for one input: every mark and tag found, and the disclosure each
    valid id traces to. True if at least one valid (MAC-checked) mark was traced."""
    codec = Codec(secret)
    findings = scan(text, codec)
    ids: list[str] = []
    for f in findings:
        if f.status in ("valid", "unverified") and f.disclosure_id and f.disclosure_id not in ids:
            ids.append(f.disclosure_id)
    records = audit_records(db, ids)
    valid_ids = {f.disclosure_id for f in findings if f.kind == "mark" and f.status == "valid"}
    disclosures: list[dict[str, Any]] = []
    for rid in ids:
        record = records.get(rid)
        proof = "mac" if rid in valid_ids else "tag only (no MAC: visible and editable)"
        if record is None:
            disclosures.append(
                {
                    "request_id": rid,
                    "traced": False,
                    "evidence": proof,
                    "problem": "no audit record for this id",
                }
            )
            continue
        entry: dict[str, Any] = {
            "request_id": rid,
            "traced": True,
            "evidence": proof,
            "audit_seq": record["audit_seq"],
        }
        entry.update({k: record.get(k) for k in TRACE_FIELDS if k != "request_id"})
        disclosures.append(entry)
    marks: list[dict[str, Any]] = []
    for f in findings:
        item = f.as_dict()
        record = records.get(f.disclosure_id or "") if f.status in ("valid", "unverified") else None
        if f.resource and record is not None and "/" in f.resource:
            # A transplanted mark or tag sits in a resource its disclosure did not release.
            item["resource_in_disclosure"] = f.resource in (record.get("resources_disclosed") or [])
        if f.status == "forged":
            item["problem"] = "MAC check failed: the mark was forged or altered"
        elif f.status == "damaged":
            item["problem"] = "the mark is incomplete (characters removed or inserted)"
        marks.append(item)
    summary = {
        "marks": sum(f.kind == "mark" for f in findings),
        "valid": sum(f.kind == "mark" and f.status == "valid" for f in findings),
        "forged": sum(f.status == "forged" for f in findings),
        "damaged": sum(f.status == "damaged" for f in findings),
        "tags": sum(f.kind == "tag" for f in findings),
        "traced": sum(1 for rid in valid_ids if rid in records),
    }
    report = {"marks": marks, "disclosures": disclosures, "summary": summary}
    return report, summary["traced"] > 0
