"""What of a FHIR request or answer is an id, and an answer with every id pseudonymised (I.4).

The response side of research pseudonyms (gateway/fhir/pseudonyms.py holds the keys and the
cipher): :class:`Masking` replaces, in place, every resource id, ``meta.versionId``, literal
reference, attachment URL, ``fullUrl``, ``entry.request.url``, ``entry.response.location`` and
``etag``, Bundle link and id, the ids in an upstream OperationOutcome's texts, and the
``Location``/``Content-Location``/``ETag`` headers; identifiers, reference displays, the narrative
and what of ``meta`` is the server's own are dropped. :func:`map_values` finds the ids in a search
parameter's value, for both directions (a request's pseudonyms are mapped back with it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from gateway.fhir.params import PATIENT_PARAMS
from gateway.fhir.resource_types import RESOURCE_TYPES
from gateway.fhir.resources import RESPONSE_BUNDLE_TYPES
from gateway.fhir.transforms import MASKED

#: Reference search parameters whose bare value (`encounter=123`) is an id. A value spelt as a
#: reference (`Type/id`, absolute, versioned) is an id in any parameter; `_id` and a `:Type`
#: modifier make one too.
REFERENCE_PARAMS = PATIENT_PARAMS | frozenset(
    {
        "actor", "agent", "asserter", "author", "based-on", "basedon", "care-team", "context",
        "derived-from", "device", "encounter", "entity", "episode-of-care", "evaluated-resource",
        "focus", "general-practitioner", "has-member", "individual", "item", "link", "location",
        "managing-organization", "medication", "member", "organization", "owner", "part-of",
        "participant", "performer", "policy-holder", "practitioner", "prescription", "recorder",
        "related", "replaces", "request", "requester", "result", "service-provider", "source",
        "specimen", "subscriber", "target", "what", "who",
    }
)  # fmt: skip
#: Modifiers under which a reference parameter's value is still an id.
ID_MODIFIERS = frozenset({"", "exact", "not"})
IDENTIFIER_KEYS = frozenset(
    {"identifier", "masterIdentifier", "accessionIdentifier", "preAdmissionIdentifier"}
)
#: What of `meta` is kept: the labels the grading reads, the profile, the time; versionId pseudonymised.
META_KEPT = ("lastUpdated", "profile", "security", "tag")
#: Keys an Attachment may carry besides `url` (an Extension has `url` and a `value[x]`).
ATTACHMENT_KEYS = frozenset({"contentType", "data", "size", "hash", "title", "creation", "language"})

_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
LITERAL = re.compile(
    r"^(?P<base>[A-Za-z][A-Za-z0-9+.-]*://[^?#]*/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/(?P<vid>[A-Za-z0-9\-.]{1,64}))?$"
)
_IN_TEXT = re.compile(
    r"(?<![A-Za-z0-9])(?P<type>"
    + "|".join(sorted(RESOURCE_TYPES, key=len, reverse=True))
    + r")/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/(?P<vid>[A-Za-z0-9\-.]{1,64}))?"
)
_TYPES_LOWER = {t.lower(): t for t in RESOURCE_TYPES}
_ETAG = re.compile(r'^(W/)?"([^"]*)"$')


#: Stored records whose content is free text about anyone (red team: a stored OperationOutcome's
#: diagnostics and a Parameters' valueString named a patient): for research their texts are dropped.
FREE_TEXT_RECORDS = frozenset({"OperationOutcome", "Parameters"})


def _drop_free_text(resource: dict[str, Any]) -> None:
    for issue in _list(resource.get("issue")):
        if isinstance(issue, dict):
            issue.pop("diagnostics", None)
            issue.pop("details", None)
    stack = list(_list(resource.get("parameter")))
    while stack:
        part = stack.pop()
        if isinstance(part, dict):
            for key in [k for k in part if k.startswith("value") and isinstance(part[k], str)]:
                del part[key]
            stack.extend(_list(part.get("part")))


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def is_pseudonym(value: str) -> bool:
    """A research pseudonym's shape: `ps-…` (reversible) or `ph-…` (one-way)."""
    return value.startswith(("ps-", "ph-"))


class Masking:
    """Pseudonymises what comes back; the id cipher is the subclass's (gateway/fhir/pseudonyms.py)."""

    #: Real ids the request named by pseudonym, bare: their pseudonym, for texts and links.
    named: dict[str, str]

    def __call__(self, rtype: str, rid: str) -> str:
        raise NotImplementedError

    def version(self, rtype: str, rid: str, vid: str) -> str:
        raise NotImplementedError

    def apply(self, resource: dict[str, Any], local: bool = False) -> None:
        """Pseudonymise one judged resource in place: its id (not a contained resource's local id),
        versionId, every reference and attachment URL; drop identifiers, displays, the narrative and
        what of `meta` is the server's own (source, author, project, compartment)."""
        rtype, rid = resource.get("resourceType"), resource.get("id")
        real = (rtype, rid) if isinstance(rtype, str) and isinstance(rid, str) and not local else None
        if real is not None:
            resource["id"] = self(*real)
        meta = resource.get("meta")
        if isinstance(meta, dict):
            kept: dict[str, Any] = {}
            vid = meta.get("versionId")
            if real is not None and isinstance(vid, str):
                kept["versionId"] = self.version(real[0], real[1], vid)
            kept.update((k, meta[k]) for k in META_KEPT if k in meta)
            resource["meta"] = kept
        resource.pop("text", None)  # a narrative names the patient and repeats the ids
        if rtype in FREE_TEXT_RECORDS:  # nothing but free text about someone: no structure is left
            _drop_free_text(resource)
        self._walk(resource, resource)

    def _walk(self, node: Any, owner: dict[str, Any]) -> None:
        if isinstance(node, list):
            for item in node:
                self._walk(item, owner)
            return
        if not isinstance(node, dict):
            return
        for key in IDENTIFIER_KEYS & node.keys():
            del node[key]
        if "valueIdentifier" in node:  # an extension's identifier (an MRN) keeps its place, masked
            node["valueIdentifier"] = {"extension": [dict(e) for e in MASKED["extension"]]}
        if _is_reference(node):
            self._reference(node)
        elif isinstance(node.get("url"), str) and ATTACHMENT_KEYS & node.keys():
            if not any(k.startswith("value") for k in node):
                node["url"] = self.mask_url(node["url"])
        is_bundle = node is owner and node.get("resourceType") == "Bundle"
        for key, value in node.items():
            if key == "contained" or (key == "resource" and (node is not owner)):
                continue  # judged, and pseudonymised, on their own
            if is_bundle and key == "entry" and isinstance(value, list):
                for entry in value:
                    if isinstance(entry, dict):
                        self.mask_entry(entry)
                        self._walk(
                            {k: v for k, v in entry.items() if k not in ("resource", "fullUrl")}, owner
                        )
                continue
            self._walk(value, owner)

    def _reference(self, ref: dict[str, Any]) -> None:
        ref.pop("display", None)
        ref.pop("identifier", None)
        value = ref.get("reference")
        if isinstance(value, str) and not value.startswith(("#", "urn:")):
            masked = self.mask_reference(value)
            if masked is None:
                del ref["reference"]  # a conditional reference (`Patient?identifier=…`) or no reference
            else:
                ref["reference"] = masked
        if not {"reference", "extension"} & ref.keys():
            ref.update({"extension": [dict(e) for e in MASKED["extension"]]})

    def mask_reference(self, value: str) -> str | None:
        """A literal reference with its id (and version) pseudonymised; None if it is not one."""
        match = LITERAL.match(value)
        if match is None or match["type"] not in RESOURCE_TYPES:
            return None
        rtype, rid, vid = match["type"], match["id"], match["vid"]
        out = f"{match['base'] or ''}{rtype}/{self(rtype, rid)}"
        return out + (f"/_history/{self.version(rtype, rid, vid)}" if vid else "")

    def mask_path(self, path: str) -> str:
        """`…/Type/id[/_history/v][/…]` with the id and version pseudonymised."""
        segs = path.split("/")
        i = 0
        while i < len(segs) - 1:
            rtype, rid = segs[i], segs[i + 1]
            if rtype in RESOURCE_TYPES and _ID.fullmatch(rid) and not rid.startswith(("$", "_")):
                segs[i + 1] = self(rtype, rid)
                if i + 3 < len(segs) and segs[i + 2] == "_history" and _ID.fullmatch(segs[i + 3]):
                    segs[i + 3] = self.version(rtype, rid, segs[i + 3])
                    i += 2
                i += 2
            else:
                i += 1
        return "/".join(segs)

    def mask_url(self, url: str) -> str:
        """A URL of this server (absolute or relative) with every id in its path and query pseudonymised."""
        if url.startswith(("urn:", "#")):
            return url
        split = urlsplit(url)
        path = self.mask_path(split.path)
        query = split.query
        if query:
            segs = [s for s in split.path.split("/") if s]
            rtype = next((s for s in reversed(segs) if s in RESOURCE_TYPES), None)
            pairs = parse_qsl(query, keep_blank_values=True)
            masked = [(k, self._mask_param(rtype, k, v)) for k, v in pairs]
            if masked != pairs:
                query = urlencode(masked)
        return urlunsplit((split.scheme, split.netloc, path, query, split.fragment))

    def _mask_param(self, rtype: str | None, key: str, value: str) -> str:
        def bare(types: list[str], rid: str, strict: bool) -> str:
            # A bare id of unknown type: its pseudonym if this request named it, else as it is.
            if not strict:
                return self.named.get(rid, rid)
            return self(types[0], rid) if len(types) == 1 else self.named.get(rid, rid)

        return map_values(rtype, key, value, bare, self.mask_reference)

    def mask_text(self, text: str) -> str:
        """Ids in free text (an upstream's diagnostics: "Resource Observation/123 is not known")."""

        def sub(m: re.Match[str]) -> str:
            masked = self.mask_reference(m.group(0))
            return masked if masked is not None else m.group(0)

        out = _IN_TEXT.sub(sub, text)
        for real, pseudonym in sorted(self.named.items(), key=lambda kv: -len(kv[0])):
            out = re.sub(rf"(?<![A-Za-z0-9\-.]){re.escape(real)}(?![A-Za-z0-9\-.])", pseudonym, out)
        return out

    def mask_entry(self, entry: dict[str, Any]) -> None:
        """A Bundle entry's own elements: fullUrl, request, response (location, etag, outcome)."""
        resource = entry.get("resource")
        real: tuple[str, str] | None = None
        if isinstance(resource, dict):
            rtype, rid = resource.get("resourceType"), resource.get("id")
            if isinstance(rtype, str) and isinstance(rid, str):
                real = (rtype, rid)
        if isinstance(entry.get("fullUrl"), str):
            entry["fullUrl"] = self.mask_url(entry["fullUrl"])
        request = entry.get("request")
        if isinstance(request, dict):
            for key in ("ifNoneMatch", "ifMatch", "ifModifiedSince", "ifNoneExist"):
                request.pop(key, None)  # a version, or a search by identifier
            if isinstance(request.get("url"), str):
                request["url"] = self.mask_url(request["url"])
        response = entry.get("response")
        if isinstance(response, dict):
            location = response.get("location")
            if isinstance(location, str):
                match = LITERAL.match(urlsplit(location).path.lstrip("/")) or LITERAL.match(location)
                if real is None and match is not None:
                    real = (match["type"], match["id"])
                response["location"] = self.mask_url(location)
            if isinstance(response.get("etag"), str):
                etag = self._etag(response["etag"], real)
                if etag is None:
                    del response["etag"]
                else:
                    response["etag"] = etag
            outcome = response.get("outcome")
            if isinstance(outcome, dict):
                self.mask_outcome(outcome)
        for link in _list(entry.get("link")):
            if isinstance(link, dict) and isinstance(link.get("url"), str):
                link["url"] = self.mask_url(link["url"])

    def _etag(self, etag: str, real: tuple[str, str] | None) -> str | None:
        match = _ETAG.match(etag.strip())
        if match is None or real is None or not _ID.fullmatch(match[2]):
            return None
        return f'{match[1] or ""}"{self.version(real[0], real[1], match[2])}"'

    def mask_outcome(self, outcome: dict[str, Any]) -> None:
        outcome.pop("text", None)
        if isinstance(outcome.get("id"), str):
            outcome["id"] = self("OperationOutcome", outcome["id"])
        if isinstance(outcome.get("meta"), dict):
            outcome["meta"] = {k: outcome["meta"][k] for k in META_KEPT if k in outcome["meta"]}
        for issue in _list(outcome.get("issue")):
            if not isinstance(issue, dict):
                continue
            if isinstance(issue.get("diagnostics"), str):
                issue["diagnostics"] = self.mask_text(issue["diagnostics"])
            details = issue.get("details")
            if isinstance(details, dict) and isinstance(details.get("text"), str):
                details["text"] = self.mask_text(details["text"])
            for key in ("expression", "location"):
                if isinstance(issue.get(key), list):
                    issue[key] = [self.mask_text(x) if isinstance(x, str) else x for x in issue[key]]

    def mask_envelope(self, body: Any) -> None:
        """What of a response is not a judged resource: search, history and batch-response Bundles
        (id, links, every entry's fullUrl, request and response), OperationOutcomes (the texts name
        ids), Parameters' values. Runs before the judged resources are pseudonymised (an entry's
        etag is the version of its resource's real id)."""
        if not isinstance(body, dict):
            return
        rtype = body.get("resourceType")
        if rtype == "OperationOutcome":
            self.mask_outcome(body)
        elif rtype == "Bundle" and str(body.get("type")) in RESPONSE_BUNDLE_TYPES:
            if isinstance(body.get("id"), str):
                body["id"] = self("Bundle", body["id"])
            if isinstance(body.get("meta"), dict):
                body["meta"] = {k: body["meta"][k] for k in META_KEPT if k in body["meta"]}
            for link in _list(body.get("link")):
                if isinstance(link, dict) and isinstance(link.get("url"), str):
                    link["url"] = self.mask_url(link["url"])
            for entry in _list(body.get("entry")):
                if isinstance(entry, dict):
                    self.mask_entry(entry)
                    self.mask_envelope(entry.get("resource"))
        elif rtype == "Parameters":
            stack = list(_list(body.get("parameter")))
            while stack:
                p = stack.pop()
                if not isinstance(p, dict):
                    continue
                for key, value in p.items():
                    if key == "valueReference" and isinstance(value, dict):
                        self._reference(value)
                    elif key in ("valueString", "valueUri", "valueUrl") and isinstance(value, str):
                        p[key] = self.mask_text(value)
                    elif key == "valueIdentifier":
                        p[key] = {"extension": [dict(e) for e in MASKED["extension"]]}
                self.mask_envelope(p.get("resource"))
                stack.extend(_list(p.get("part")))

    def mask_headers(
        self, headers: Mapping[str, str], resource: tuple[str, str] | None = None
    ) -> dict[str, str]:
        """Response headers with their ids pseudonymised: ``Location`` and ``Content-Location``
        (their path), ``ETag`` (the version of ``resource``, the real type and id answered, else of
        the record a Location names; dropped when neither is known)."""
        out: dict[str, str] = {}
        for name, value in headers.items():
            if name.lower() in ("location", "content-location"):
                out[name] = self.mask_url(value)
                resource = resource or _last_literal(urlsplit(value).path)
            elif name.lower() != "etag":
                out[name] = value
        for name, value in headers.items():
            if name.lower() == "etag":
                etag = self._etag(value, resource)
                if etag is not None:
                    out[name] = etag
        return out


def _last_literal(path: str) -> tuple[str, str] | None:
    segs = [s for s in path.split("/") if s]
    for i in range(len(segs) - 2, -1, -1):
        if (
            segs[i] in RESOURCE_TYPES
            and _ID.fullmatch(segs[i + 1])
            and not segs[i + 1].startswith(("$", "_"))
        ):
            return segs[i], segs[i + 1]
    return None


def _is_reference(node: dict[str, Any]) -> bool:
    """A Reference: a literal one, one by identifier, or a display alone (it names a person too)."""
    if isinstance(node.get("reference"), str):
        return True
    if isinstance(node.get("identifier"), dict) and ("display" in node or "type" in node or len(node) == 1):
        return True
    return isinstance(node.get("display"), str) and set(node) <= {"display", "type", "id", "extension"}


def map_values(
    rtype: str | None,
    key: str,
    value: str,
    bare: Callable[[list[str], str, bool], str],
    reference: Callable[[str], str | None],
) -> str:
    """Apply ``bare`` (candidate types, id) to every bare id and ``reference`` to every reference
    in one parameter value; the rest of the value as it is."""
    name, _, modifier = key.partition(":")
    if "." in key or name.startswith("_has"):
        return value  # chains and _has: refused for research (emr.sidechannel, emr.research)
    if name == "_id":
        if modifier == "missing":
            return value
        types = [rtype] if rtype else sorted(RESOURCE_TYPES)
        return ",".join(bare(types, v.strip(), True) if v.strip() else v for v in value.split(","))
    if name.startswith("_"):
        return value
    typed = _TYPES_LOWER.get(modifier.lower()) if modifier else None
    is_ref = name in REFERENCE_PARAMS and (modifier in ID_MODIFIERS or typed is not None)
    out = []
    for item in value.split(","):
        stripped = item.strip()
        if "/" in stripped:
            masked = reference(stripped) if LITERAL.match(stripped) else None
            out.append(item if masked is None else masked)
        elif stripped and (typed is not None or is_ref or is_pseudonym(stripped)):
            if typed is not None:
                types = [typed]
            elif name in PATIENT_PARAMS:
                types = ["Patient", *sorted(RESOURCE_TYPES - {"Patient"})]
            else:
                types = sorted(RESOURCE_TYPES)
            out.append(bare(types, stripped, typed is not None or is_ref))
        else:
            out.append(item)
    return ",".join(out)
