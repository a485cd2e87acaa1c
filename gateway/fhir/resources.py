"""Find every resource in a FHIR response, summarise it for the response decision, apply verdicts.

"Filter what comes back, not only what was asked" (DESIGN.md): search pages, `_include`d and
`_revinclude`d entries, history, `$everything`, contained resources, Parameters outputs and
batch/transaction responses are all walked the same way, so a request that was rewritten to look
harmless cannot carry a resource past the filter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from gateway.fhir.codings import _codings, all_codings
from gateway.fhir.resource_types import RESOURCE_TYPES

# Elements that point at the patient a resource is about (Patient compartment, most used ones):
# `actor` is the patient's element in Appointment, AppointmentResponse and Schedule.
PATIENT_ELEMENTS = ("subject", "patient", "beneficiary", "actor")
# Bundles the server generates to carry answers: only their contents are judged. Any other Bundle
# (a stored document, message or collection) is a resource of its own with its own labels, and is
# judged as one (its verdict covers everything inside) as well as entry by entry.
RESPONSE_BUNDLE_TYPES = frozenset({"searchset", "history", "batch-response", "transaction-response"})
REDACTED_LABEL = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "REDACTED",
    "display": "redacted",
}


def _list(value: Any) -> list[Any]:
    """An element that should be an array, as one (an upstream's malformed answer is judged, not a crash)."""
    return value if isinstance(value, list) else []


def response_bundle(resource: Any) -> bool:
    """A Bundle the server generated to carry answers (its type may be anything an upstream sends)."""
    kind = resource.get("type") if isinstance(resource, dict) else None
    return isinstance(kind, str) and kind in RESPONSE_BUNDLE_TYPES


# Stands for a patient the gateway cannot name (a logical reference by identifier, a malformed id):
# no department, no care team, so every care-bound role is refused (fail closed).
UNRESOLVED_PATIENT = "Patient/unresolved-reference"
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def reference_patient(ref: Any) -> str | None:
    """'Patient/x' from a Reference (relative, absolute, versioned, with a fragment), else None.

    The type is matched case-insensitively: a server that resolves ``patient/x`` must not give the
    gateway a reason to think no patient is involved.
    """
    if not isinstance(ref, dict):
        return None
    value = ref.get("reference")
    if not isinstance(value, str):
        return None
    value = unquote(value).strip()  # `Patient%2Fx`, ` Patient/x`: what a lenient server would read
    parts = [p for p in value.split("#", 1)[0].split("/") if p]
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    for i in range(len(parts) - 2, -1, -1):
        if parts[i].lower() == "patient":
            pid = parts[i + 1]
            return f"Patient/{pid}" if _ID.match(pid) and pid not in (".", "..") else UNRESOLVED_PATIENT
    return None


#: Records that are always about a person: with no patient the gateway can name (no subject, an
#: attachment's text naming them), whose they are cannot be told — the unresolved patient.
PERSON_RECORDS = frozenset(
    {
        "AllergyIntolerance", "CarePlan", "ClinicalImpression", "Composition", "Condition",
        "DiagnosticReport", "DocumentManifest", "DocumentReference", "Encounter", "EpisodeOfCare",
        "FamilyMemberHistory", "ImagingStudy", "Immunization", "Media", "MedicationAdministration",
        "MedicationDispense", "MedicationRequest", "MedicationStatement", "Observation", "Procedure",
        "QuestionnaireResponse", "RiskAssessment", "ServiceRequest", "Specimen",
    }
)  # fmt: skip
#: The identifier system of the hospital's staff (operators): a reference by it names a person who
#: works here, not a patient.
OPERATOR_SYSTEM = "https://emrguard.example/fhir/sid/operator"
#: How far references are followed through contained resources and Bundle entries.
MAX_HOPS = 8
#: A resource's own keys that hold no reference to walk (contained resources are judged on their own).
OWN_KEYS = frozenset({"contained", "meta", "id", "resourceType"})


@dataclass
class Context:
    """Where a resource sits: what its `#id` and `urn:uuid:` references can point at."""

    container: dict[str, Any] | None = None  # the resource whose `contained` holds it (or itself)
    bundle: dict[str, Any] | None = None  # the Bundle it is an entry of
    contained: bool = False  # it is itself a contained resource (its id is local)
    _entries: dict[str, dict[str, Any]] | None = None

    def entry(self, full_url: str) -> dict[str, Any] | None:
        if self.bundle is None:
            return None
        if self._entries is None:  # built only when a reference needs it
            self._entries = {
                e["fullUrl"]: e["resource"]
                for e in _list(self.bundle.get("entry"))
                if isinstance(e, dict)
                and isinstance(e.get("fullUrl"), str)
                and isinstance(e.get("resource"), dict)
            }
        return self._entries.get(full_url)

    def contained_resource(self, local_id: str) -> dict[str, Any] | None:
        for child in _list((self.container or {}).get("contained")):
            if isinstance(child, dict) and child.get("id") == local_id:
                return child
        return None


def _reference_patients(ref: dict[str, Any], ctx: Context, hops: int, patient_element: bool) -> set[str]:
    """The patients one Reference points at, failing closed where it cannot say who they are."""
    value = ref.get("reference")
    if isinstance(value, str):
        if value.startswith("#"):  # a contained resource: a contained Patient has no identity here
            target = ctx.contained_resource(value[1:]) if len(value) > 1 else None
            if target is None:
                return {UNRESOLVED_PATIENT} if len(value) > 1 else set()
            return _about(target, Context(ctx.container, ctx.bundle, True), hops)
        patient = reference_patient(ref)
        if patient:
            return {patient}
        target = ctx.entry(value)  # urn:uuid: (or any fullUrl) of another entry of the Bundle
        if target is not None:
            return _about(target, Context(target, ctx.bundle, True), hops) | _embedded_id(target)
        if value.lower().startswith("urn:"):
            return {UNRESOLVED_PATIENT}  # a urn that names nothing in this Bundle: who is it?
        if patient_element and not _other_record(value):
            # `subject: " Patient/x"`, `"Patient%2Fx"`, `"Patient?identifier=…"`: a spelling the
            # gateway does not read may still be one a server resolves (red team) — fail closed.
            return {UNRESOLVED_PATIENT}
        return set()
    ident = ref.get("identifier")
    if isinstance(ident, dict):
        # By identifier only: unknown to the gateway unless it is plainly not a patient.
        kind = ref.get("type")
        not_patient = isinstance(kind, str) and kind.rsplit("/", 1)[-1].lower() != "patient"
        staff = ident.get("system") == OPERATOR_SYSTEM
        return set() if (not_patient or staff) else {UNRESOLVED_PATIENT}
    if patient_element and isinstance(ref.get("display"), str):
        return {UNRESOLVED_PATIENT}  # subject: {display: "张三"} names someone nobody can check
    return set()


_OTHER_LITERAL = re.compile(
    r"^(?:[a-z][a-z0-9+.-]*://[^?#\s]*/)?([a-z]+)/[a-z0-9\-.]{1,64}(?:/_history/[a-z0-9\-.]{1,64})?$", re.I
)
#: Types of literal references in a patient element that name no patient (an Appointment's
#: `actor: Practitioner/x`): all but Patient, and Group (its members may be patients).
_NOT_PATIENTS = frozenset(t.lower() for t in RESOURCE_TYPES) - {"patient", "group"}


def _other_record(value: str) -> bool:
    """A well-formed literal reference to a record of a type that is no patient."""
    match = _OTHER_LITERAL.match(value)
    return match is not None and match[1].lower() in _NOT_PATIENTS


def _walk_refs(node: Any, found: set[str], patient_element: bool, ctx: Context, hops: int) -> None:
    if isinstance(node, dict):
        if any(k in node for k in ("reference", "identifier", "display")) and not isinstance(
            node.get("resourceType"), str
        ):
            found |= _reference_patients(node, ctx, hops, patient_element)
        for key, value in node.items():
            if key not in ("contained", "meta", "identifier"):  # contained resources are judged on their own
                _walk_refs(value, found, key in PATIENT_ELEMENTS, ctx, hops)
    elif isinstance(node, list):
        for item in node:
            _walk_refs(item, found, patient_element, ctx, hops)


def _about(resource: dict[str, Any], ctx: Context, hops: int) -> set[str]:
    if hops <= 0:
        return {UNRESOLVED_PATIENT}  # too deep to tell: fail closed
    found: set[str] = set()
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        # A contained or embedded Patient is a person whose identity the server cannot vouch for.
        if ctx.contained or not isinstance(rid, str):
            found.add(UNRESOLVED_PATIENT)
        else:
            found.add(f"Patient/{rid}")
    if resource.get("resourceType") == "Bundle":  # a stored document or collection: all it holds
        for entry in _list(resource.get("entry")):
            child = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(child, dict):
                found |= _about(child, Context(child, resource, True), hops - 1)
                found |= _embedded_id(child)
    skip = OWN_KEYS | ({"entry"} if resource.get("resourceType") == "Bundle" else set())
    for key, value in resource.items():
        if key not in skip:
            _walk_refs(value, found, key in PATIENT_ELEMENTS, ctx, hops - 1)
    return found


def _embedded_id(resource: dict[str, Any]) -> set[str]:
    """A Patient embedded in a stored Bundle: unresolved, and — with a valid id — maybe that patient
    too; both count (a sealed patient's copy in a collection reached a hospital-wide role)."""
    rid = resource.get("id")
    if (
        resource.get("resourceType") == "Patient"
        and isinstance(rid, str)
        and _ID.match(rid)
        and rid not in (".", "..")
    ):
        return {f"Patient/{rid}"}
    return set()


def resource_patients(resource: dict[str, Any], ctx: Context | None = None) -> set[str]:
    """Every patient a resource is about (DESIGN.md: every disclosed resource tied to its patients):
    itself if a Patient; every patient it references anywhere (subject, patient, but also
    Appointment.participant.actor, Observation.focus, Provenance.target, Group.member …), in every
    form — literal (relative, absolute, versioned), `#id` into its contained resources, `urn:uuid:`
    into the Bundle it is in; and, for a stored Bundle, every patient of every entry. What cannot be
    tied to a patient is :data:`UNRESOLVED_PATIENT`: a contained or embedded Patient, a reference by
    identifier or display only, a urn that names nothing here (only hospital-wide roles see those)."""
    found = _about(resource, ctx or Context(container=resource), MAX_HOPS)
    if not found and resource.get("resourceType") in PERSON_RECORDS:
        found.add(UNRESOLVED_PATIENT)  # a clinical record about no one it names (red team: a note)
    if resource.get("resourceType") == "OperationOutcome" and any(
        isinstance(i, dict) and (i.get("diagnostics") or (i.get("details") or {}).get("text"))
        for i in _list(resource.get("issue"))
    ):
        # Judged only when stored (a record read or searched, see _walk): its text is free text
        # about anyone, so whose it is cannot be told (red team: a patient's name and an HIV code).
        found.add(UNRESOLVED_PATIENT)
    return found


@dataclass
class Slot:
    """Where one resource sits in the response, so its verdict can be applied in place."""

    resource: dict[str, Any]
    kind: str  # root | entry | contained | parameter
    path: str
    container: list[Any] | None = None  # the list that holds it (entry, contained, parameter)
    index: int = 0
    entry: dict[str, Any] | None = None  # its Bundle entry
    bundle: dict[str, Any] | None = None  # the Bundle it is in
    parent: dict[str, Any] | None = None  # for a contained resource: the resource that contains it
    #: Patients of the records it is about (a Provenance's target): they are its patients too.
    about: set[str] = field(default_factory=set)

    def patients(self) -> set[str]:
        return self._own_patients() | self.about

    def _own_patients(self) -> set[str]:
        """Its patients where it sits (its container's `#id`s, its Bundle's fullUrls). A resource
        contained in another, or embedded in a stored Bundle (a document, a collection), is not the
        server's record: a Patient there has no identity the gateway can check."""
        if self.kind == "contained":
            return resource_patients(self.resource, Context(self.parent, self.bundle, True))
        embedded = self.bundle is not None and not response_bundle(self.bundle)
        found = resource_patients(self.resource, Context(self.resource, self.bundle, embedded))
        return found | _embedded_id(self.resource) if embedded else found

    def summary(self) -> dict[str, Any]:
        r = self.resource
        meta: dict[str, Any] = r["meta"] if isinstance(r.get("meta"), dict) else {}
        patients = sorted(self.patients())
        codes = all_codings(r)
        search = (self.entry or {}).get("search")
        search = search if isinstance(search, dict) else {}
        return {
            "type": r.get("resourceType"),
            "id": r.get("id"),
            "patient": patients[0] if patients else None,
            "patients": patients,
            "security": _codings(meta.get("security")),
            "tags": _codings(meta.get("tag")),
            "codes": codes,
            "kind": self.kind,
            "path": self.path,
            "search_mode": search.get("mode"),
            "bundle_type": (self.bundle or {}).get("type"),
        }


def collect(body: Any, stored: bool = False) -> list[Slot]:
    """Every resource in a response body, parents before their children. ``stored``: the body is a
    record read by id (so even an OperationOutcome or Parameters is judged as one)."""
    slots: list[Slot] = []
    if isinstance(body, dict) and isinstance(body.get("resourceType"), str):
        _walk(body, Slot(body, "root", ""), slots, stored)
    return slots


def _search_mode(entry: dict[str, Any] | None) -> Any:
    search = (entry or {}).get("search")
    return search.get("mode", "match") if isinstance(search, dict) else "match"


def _stored(slot: Slot) -> bool:
    """A record the server keeps (a match of a search or history page), not its own message."""
    return (
        slot.kind == "entry"
        and response_bundle(slot.bundle)
        and (slot.bundle or {}).get("type") in ("searchset", "history")
        and _search_mode(slot.entry) != "outcome"
    )


def _walk(resource: dict[str, Any], slot: Slot, slots: list[Slot], stored: bool = False) -> None:
    rtype = resource.get("resourceType")
    # A stored OperationOutcome or Parameters is a record like any other (red team: a stored
    # OperationOutcome's diagnostics named a patient and an HIV code); the server's own outcome of
    # this request, or the Parameters an operation answers with, carries what is judged inside it.
    stored = stored or _stored(slot)
    carrier = (rtype == "Parameters" and not stored) or (rtype == "Bundle" and response_bundle(resource))
    if not carrier and (rtype != "OperationOutcome" or stored):
        slots.append(slot)
    prefix = f"{slot.path}." if slot.path else ""
    contained = resource.get("contained")
    if isinstance(contained, list):
        for i, child in enumerate(contained):
            if isinstance(child, dict):
                _walk(
                    child,
                    Slot(
                        child,
                        "contained",
                        f"{prefix}contained[{i}]",
                        contained,
                        i,
                        slot.entry,
                        slot.bundle,
                        parent=resource,
                    ),
                    slots,
                )
    if rtype == "Bundle" and isinstance(resource.get("entry"), list):
        entries = resource["entry"]
        for i, entry in enumerate(entries):
            child = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(child, dict):
                _walk(
                    child,
                    Slot(child, "entry", f"{prefix}entry[{i}].resource", entries, i, entry, resource),
                    slots,
                )
    if rtype == "Parameters":
        _walk_parameters(resource.get("parameter"), prefix + "parameter", slots)


def _walk_parameters(params: Any, path: str, slots: list[Slot]) -> None:
    if not isinstance(params, list):
        return
    for i, p in enumerate(params):
        if not isinstance(p, dict):
            continue
        child = p.get("resource")
        if isinstance(child, dict):
            _walk(child, Slot(child, "parameter", f"{path}[{i}].resource", params, i), slots)
        _walk_parameters(p.get("part"), f"{path}[{i}].part", slots)


def remove_path(resource: dict[str, Any], path: str) -> bool:
    """Remove a dotted element path (``name``, ``subject.display``, ``contact.telecom``)."""
    head, _, rest = path.partition(".")
    if head not in resource:
        return False
    if not rest:
        del resource[head]
        return True
    value = resource[head]
    removed = False
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dict):
            removed = remove_path(item, rest) or removed
    return removed


def mark_redacted(resource: dict[str, Any]) -> None:
    """Label a resource so the client knows fields were withheld (HL7 v3 ObservationValue REDACTED)."""
    if not isinstance(resource.get("meta"), dict):
        resource["meta"] = {}  # a malformed meta says nothing the client may rely on
    meta = resource["meta"]
    if not isinstance(meta.get("security"), list):
        meta["security"] = []
    security = meta["security"]
    if not any(isinstance(s, dict) and s.get("code") == "REDACTED" for s in security):
        security.append(dict(REDACTED_LABEL))
