"""Hypothesis strategies for tests/hostile/test_properties.py.

Every generated response is built around two patients: V, whom the operator may see, and P, whom
they may not (P is in another department, or sealed). The builder remembers which of what it made
carries P — P's own Patient, every record that references P in any shape, every record about such
a record — so that a leak can be judged by content: P's id, name and identifier values and the ids
of P's records must appear nowhere in what the filter releases.

Reference shapes: literal (relative, absolute, versioned), `#id` into a contained Patient,
`urn:uuid:` into the enclosing Bundle (resolved, or naming nothing), identifier-only (with or
without `type`), display-only (where the patient is named), in the patient element, in extensions
and in nested backbone elements. Records about records: Provenance.target, AuditEvent.entity.what,
List.entry.item, Composition.section.entry, DocumentReference.context.related, whose targets are
in the same response (by literal reference or urn:uuid), contained, or only on the server.
Containers: a single resource, searchset, history, batch-response, transaction-response, stored
collections and documents (also nested in a search page), Parameters.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from hypothesis import strategies as st

HOST = "https://emr.example/fhir"
ICD = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
MRN = "https://hospital.example/mrn"
NATIONAL_ID = "urn:oid:2.16.156.10011.1.2"
EXT = "https://hospital.example/fhir/StructureDefinition/"
NOW = "2026-12-01T08:00:00.000Z"
DEPT = "cardiology"
OPERATOR = "u1"

#: (system, code, grade it gives a record): ungraded, grade 4 and grade 5 content.
CODES: list[tuple[str, str, int]] = [
    (LOINC, "8867-4", 0),
    (ICD, "J45", 0),
    (ICD, "F32", 4),
    (ICD, "B20", 5),
    ("urn:oid:2.16.840.1.113883.6.3", "b20.1", 5),
]

#: Clinical types and the element that names their patient (the Patient compartment's).
CLINICAL: dict[str, tuple[str, ...]] = {
    "Observation": ("subject",),
    "Condition": ("subject",),
    "Encounter": ("subject",),
    "Procedure": ("subject",),
    "DiagnosticReport": ("subject",),
    "MedicationRequest": ("subject",),
    "CarePlan": ("subject",),
    "Flag": ("subject",),
    "AllergyIntolerance": ("patient",),
    "Immunization": ("patient",),
    "Coverage": ("beneficiary",),
    "Appointment": ("participant", "actor"),
}
#: Records about other records, and where they name what they are about.
DESCRIBING = ("Provenance", "AuditEvent", "List", "Composition", "DocumentReference")
#: Roles bound to a care relationship (opa_policies/emr/config/care): they see no unresolved patient.
CARE_BOUND = (
    ("physician", "TREAT"),
    ("nurse", "TREAT"),
    ("resident", "TREAT"),
    ("student", "TRAIN"),
    ("physician", "ETREAT"),  # with a break-glass reason: it reaches the patients the request names
)
#: Roles with hospital-wide scope for their purpose: they see the unresolved patient.
HOSPITAL_WIDE = (("pharmacist", "TREAT"), ("records_officer", "HOPERAT"), ("researcher", "HRESCH"))

ROTATION = {
    "id": "g-rot",
    "kind": "rotation",
    "dept": DEPT,
    "purposes": ["TRAIN"],
    "start": "2026-12-01T00:00:00Z",
    "end": "2026-12-31T23:59:59Z",
    "operator": OPERATOR,
}
SEAL = {"id": "s1", "authorised": ["u-auth"], "case": "舆情-2026-031"}


@dataclass
class Person:
    id: str
    name: str
    mrn: str
    national_id: str

    @property
    def ref(self) -> str:
        return f"Patient/{self.id}"

    def identifiers(self) -> list[dict[str, str]]:
        return [{"system": MRN, "value": self.mrn}, {"system": NATIONAL_ID, "value": self.national_id}]

    def strings(self) -> set[str]:
        return {self.id, self.name, self.mrn, self.national_id}

    def patient(self, rid: str | None = None, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"resourceType": "Patient"}
        if rid:
            out["id"] = rid
        out.update(
            name=[{"text": self.name}], identifier=self.identifiers(), gender="female", birthDate="1990-03-07"
        )
        out.update(extra)
        return out


def facts(depts: list[str], team: list[str] | None = None, sealed: bool = False) -> dict[str, Any]:
    """A patient's facts as the care and seal plugins put them into the policy input."""
    return {
        "departments": depts,
        "care_team": team or [],
        "flags": [],
        "sealed": sealed,
        "seal": dict(SEAL) if sealed else None,
    }


@dataclass
class World:
    """The operator, the two patients and the server's records, and what must not be released."""

    role: str
    purpose: str
    visible: Person
    hidden: Person
    hidden_by: str  # "care": P is in another department; "seal": P is sealed (in the operator's)
    #: The server's records ("Type/id"), for the records a describing resource is about.
    store: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: P's id, name, identifier values, and the ids of every record that carries P.
    secrets: set[str] = field(default_factory=set)
    #: Ids of V's plain records at the top of a search page: a filter that withholds them is wrong.
    must_keep: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.secrets |= self.hidden.strings()

    @property
    def care_bound(self) -> bool:
        return (self.role, self.purpose) in CARE_BOUND

    def facts(self) -> dict[str, dict[str, Any]]:
        hidden = facts(["oncology"]) if self.hidden_by == "care" else facts([DEPT], [OPERATOR], sealed=True)
        return {self.visible.ref: facts([DEPT]), self.hidden.ref: hidden}

    def subject(self) -> dict[str, Any]:
        return {
            "id": OPERATOR,
            "name": "测试",
            "roles": [self.role],
            "dept": DEPT,
            "org": "h1",
            "grants": [dict(ROTATION)] if self.purpose == "TRAIN" else [],
        }

    def break_glass(self) -> dict[str, str] | None:
        return {"reason": "cardiac arrest on the ward"} if self.purpose == "ETREAT" else None


ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-."
NAMES_P = ["洪玉英", "欧阳娜娜", "Zhang Hidden"]
NAMES_V = ["王伟", "李娜", "Chen Visible"]


@st.composite
def people(draw: st.DrawFn) -> tuple[Person, Person]:
    suffix = draw(st.text(ID_CHARS, min_size=1, max_size=8))
    digits = draw(st.text("0123456789", min_size=4, max_size=4))
    hidden = Person(
        f"hid-{suffix}", draw(st.sampled_from(NAMES_P)), f"MRN-H{digits}", f"11010119900307{digits}"
    )
    visible = Person(
        f"vis-{suffix}", draw(st.sampled_from(NAMES_V)), f"MRN-V{digits}", f"31010119850101{digits}"
    )
    return visible, hidden


@st.composite
def worlds(draw: st.DrawFn, care_bound: bool | None = None) -> World:
    """An operator for whom P is not visible: care-bound (P in another department, or sealed) or
    with hospital-wide scope (P sealed)."""
    visible, hidden = draw(people())
    combos = [(r, p, h) for r, p in CARE_BOUND for h in ("care", "seal")] if care_bound is not False else []
    if care_bound is not True:
        combos += [(r, p, "seal") for r, p in HOSPITAL_WIDE]
    role, purpose, hidden_by = draw(st.sampled_from(combos))
    return World(role, purpose, visible, hidden, hidden_by)


class Scope:
    """A Bundle being built: what its urn:uuid references may point at is added to it."""

    def __init__(self, kind: str, number: int) -> None:
        self.kind = kind
        self.number = number
        self.entries: list[dict[str, Any]] = []
        self.n = 0

    def urn(self) -> str:
        self.n += 1
        return f"urn:uuid:{self.n:08x}-0000-4000-8000-{self.number:012x}"


class Builder:
    """Draws resources for one world, keeping its secrets and store up to date."""

    def __init__(self, draw: st.DrawFn, world: World, unresolvable: bool, about_local: bool = True) -> None:
        self.draw = draw
        self.world = world
        #: May a describing resource point at what it is about by `#id` or urn:uuid? (A withheld
        #: record reached so is not yet withheld with it: test_properties.ABOUT_LOCAL_BUG.)
        self.about_local = about_local
        #: May P be named in shapes the gateway cannot resolve? (Hospital-wide roles see those.)
        self.unresolvable = unresolvable
        self.n = 0
        self.stored = 0  # how deep in stored Bundles (collections, documents) the builder is
        #: Resources (by object id) that carry P only through what a describing resource is about on
        #: the server or by literal reference: judged with it (gateway/decide.py), but a collection
        #: holding one is not P's (its entry is cut out, the collection released).
        self.indirect: set[int] = set()

    def new_id(self, tainted: bool, kind: str = "r") -> str:
        self.n += 1
        rid = f"{'hid' if tainted else 'vis'}-{kind}{self.n}"
        if tainted:
            self.world.secrets.add(rid)
        return rid

    # --- references to a patient -----------------------------------------------------------------

    def reference(
        self,
        person: Person,
        holder: dict[str, Any],
        scope: Scope | None,
        patient_element: bool,
    ) -> tuple[dict[str, Any], bool]:
        """A Reference to ``person`` in one of its shapes; True if the gateway can resolve it."""
        shapes = ["relative", "absolute", "versioned", "absolute-versioned", "lower-case"]
        if person is self.world.visible:
            shapes += shapes  # V mostly as the server names her: so that much of V is released
        if person is self.world.visible or self.unresolvable:
            shapes += ["contained", "identifier", "logical", "urn-nowhere"]
            if patient_element:
                shapes.append("display")
            if scope is not None:
                shapes.append("urn")
        shape = self.draw(st.sampled_from(shapes))
        version = self.draw(st.integers(1, 9))
        ref: dict[str, Any]
        if shape == "relative":
            ref = {"reference": person.ref}
        elif shape == "absolute":
            ref = {"reference": f"{HOST}/{person.ref}"}
        elif shape == "versioned":
            ref = {"reference": f"{person.ref}/_history/{version}"}
        elif shape == "absolute-versioned":
            ref = {"reference": f"{HOST}/{person.ref}/_history/{version}"}
        elif shape == "lower-case":  # a server may resolve the type in any case
            ref = {"reference": f"patient/{person.id}"}
        elif shape == "contained":
            local = f"p{len(holder.setdefault('contained', []))}"
            holder["contained"].append(person.patient(local))
            ref = {"reference": f"#{local}"}
        elif shape == "identifier":
            ref = {"identifier": self.draw(st.sampled_from(person.identifiers()))}
        elif shape == "logical":
            ref = {"type": "Patient", "identifier": self.draw(st.sampled_from(person.identifiers()))}
        elif shape == "display":
            ref = {"display": person.name}
        elif shape == "urn-nowhere":
            ref = {"reference": "urn:uuid:6a1b2c3d-0000-4000-8000-000000000000"}
        else:
            assert scope is not None
            urn = scope.urn()
            embedded = self.draw(st.sampled_from([person.id, None]))
            scope.entries.append({"fullUrl": urn, "resource": person.patient(embedded)})
            ref = {"reference": urn}
        if "reference" in ref and self.draw(st.booleans()):
            ref["display"] = person.name
        return ref, shape in ("relative", "absolute", "versioned", "absolute-versioned", "lower-case")

    def place(
        self, resource: dict[str, Any], person: Person, scope: Scope | None, element: tuple[str, ...] | None
    ) -> bool:
        """Name ``person`` in ``resource``: in its patient element, or in an extension, a nested
        extension or a backbone element. True if the reference can be resolved."""
        where = "element" if element else self.draw(st.sampled_from(["extension", "nested", "modifier"]))
        ref, resolvable = self.reference(person, resource, scope, where == "element")
        if where == "element" and element is not None and len(element) == 2:  # Appointment.participant.actor
            staff = {element[1]: {"reference": "Practitioner/dr-li"}, "status": "accepted"}
            resource[element[0]] = [{element[1]: ref, "status": "accepted"}, staff]
        elif where == "element":
            assert element is not None
            resource[element[0]] = ref
        elif where == "extension":
            resource.setdefault("extension", []).append(
                {"url": f"{EXT}related-person", "valueReference": ref}
            )
        elif where == "nested":
            resource.setdefault("note", []).append(
                {"text": "see", "extension": [{"url": f"{EXT}about", "valueReference": ref}]}
            )
        else:
            resource.setdefault("modifierExtension", []).append(
                {"url": f"{EXT}wrapper", "extension": [{"url": "who", "valueReference": ref}]}
            )
        return resolvable

    # --- resources -------------------------------------------------------------------------------

    def coding(self) -> tuple[dict[str, Any], int]:
        system, code, grade = self.draw(st.sampled_from(CODES))
        return {"coding": [{"system": system, "code": code}], "text": "record"}, grade

    def clinical(self, scope: Scope | None, owners: list[Person] | None = None) -> dict[str, Any]:
        """A clinical record of V, of P, or of both (P named somewhere besides the subject)."""
        w = self.world
        if owners is None:
            owners = self.draw(
                st.sampled_from(
                    [[w.visible], [w.visible], [w.hidden], [w.visible, w.hidden], [w.hidden, w.visible]]
                )
            )
        rtype = self.draw(st.sampled_from(sorted(CLINICAL)))
        tainted = w.hidden in owners
        code, grade = self.coding()
        resource: dict[str, Any] = {"resourceType": rtype, "id": self.new_id(tainted)}
        resource.update(_required(rtype, code))
        resolvable = True
        for i, person in enumerate(owners):
            resolvable = (
                self.place(resource, person, scope, CLINICAL[rtype] if i == 0 else None) and resolvable
            )
        resource.setdefault("meta", {"versionId": str(self.draw(st.integers(1, 5)))})
        if not tainted and resolvable and grade == 0 and "contained" not in resource:
            resource["_plain"] = True  # removed by the caller: V's record the operator may see
        return resource

    def bystander(self) -> dict[str, Any]:
        """A record about no patient: staff, organisations, medicines."""
        rtype = self.draw(st.sampled_from(["Practitioner", "Organization", "Medication", "Location"]))
        out: dict[str, Any] = {"resourceType": rtype, "id": self.new_id(False, "b")}
        if rtype == "Practitioner":
            out["name"] = [{"text": "李医生"}]
        else:
            out["name" if rtype != "Medication" else "code"] = (
                "aspirin" if rtype != "Medication" else {"text": "x"}
            )
        return out

    def patient(self, scope: Scope | None) -> dict[str, Any]:
        """V's or P's own Patient (V's may link to P: then it is P's too)."""
        w = self.world
        # Embedded in a stored Bundle, P's own Patient is judged as nobody the server knows, which
        # hospital-wide roles see (test_an_embedded_patient_is_also_the_patient_it_names).
        if (self.unresolvable or not self.stored) and self.draw(st.booleans()):
            return w.hidden.patient(w.hidden.id)
        out = w.visible.patient(w.visible.id)
        if self.draw(st.integers(0, 3)) == 0:
            ref, _ = self.reference(w.hidden, out, scope, False)
            out["link"] = [{"other": ref, "type": "seealso"}]
        return out

    def target(self, holder: dict[str, Any], scope: Scope | None) -> tuple[dict[str, Any], bool, bool]:
        """What a describing resource is about, and where it lives; whether it carries P, and
        whether the describing resource's own references reach P (`#id`, urn:uuid, Patient/P)."""
        w = self.world
        kind = self.draw(st.sampled_from(["clinical", "clinical", "patient", "bystander"]))
        if kind == "patient":
            person = self.draw(st.sampled_from([w.visible, w.hidden]))
            target = person.patient(person.id)
        elif kind == "bystander":
            target = self.bystander()
        else:
            target = self.clinical(None)  # on the server: its references are literal or local
            target.pop("_plain", None)
        tainted = any(s in _text(target) for s in w.secrets)
        where = ["server"] + (["contained"] if self.about_local else [])
        if scope is not None:
            where += ["sibling"] + (["sibling-urn"] if self.about_local else [])
        how = self.draw(st.sampled_from(where))
        literal = f"{target['resourceType']}/{target['id']}"
        if how == "contained" and kind != "patient":
            local = f"t{len(holder.setdefault('contained', []))}"
            inner = copy.deepcopy(target)
            inner["id"] = local
            inner.pop("contained", None)  # a contained resource contains nothing (FHIR)
            holder["contained"].append(inner)
            carries = any(s in _text(inner) for s in w.secrets)
            return {"reference": f"#{local}"}, carries, carries
        if how in ("sibling", "sibling-urn") and kind != "patient":
            assert scope is not None
            url = scope.urn() if how == "sibling-urn" else f"{HOST}/{literal}"
            scope.entries.append({"fullUrl": url, "resource": target})
            return (
                {"reference": url if how == "sibling-urn" else literal},
                tainted,
                tainted and how == "sibling-urn",
            )
        w.store[literal] = copy.deepcopy(target)
        direct = tainted and kind == "patient"
        shape = self.draw(st.sampled_from(["", HOST + "/", "versioned", "lower-case"]))
        if shape == "versioned":
            return {"reference": f"{literal}/_history/1"}, tainted, direct
        if shape == "lower-case":
            return {"reference": f"{target['resourceType'].lower()}/{target['id']}"}, tainted, direct
        return {"reference": shape + literal}, tainted, direct

    def describing(self, scope: Scope | None) -> dict[str, Any]:
        """A Provenance, AuditEvent, List, Composition or DocumentReference about other records."""
        w = self.world
        rtype = self.draw(st.sampled_from(DESCRIBING))
        resource: dict[str, Any] = {"resourceType": rtype}
        refs, tainted, direct = [], False, False
        for _ in range(self.draw(st.integers(1, 3))):
            ref, carries, reaches = self.target(resource, scope)
            refs.append(ref)
            tainted, direct = tainted or carries, direct or reaches
        if rtype == "AuditEvent" and self.unresolvable and self.draw(st.booleans()):
            refs.append({"identifier": self.draw(st.sampled_from(w.hidden.identifiers()))})  # by MRN only
            tainted = direct = True
        if tainted and not direct:
            self.indirect.add(id(resource))
        staff = {"reference": "Practitioner/dr-li", "display": "李医生"}
        if rtype == "Provenance":
            resource.update(target=refs, recorded="2026-11-30T10:00:00Z", agent=[{"who": staff}])
        elif rtype == "AuditEvent":
            resource.update(
                type={"code": "rest"},
                recorded="2026-11-30T10:00:00Z",
                agent=[{"who": staff, "requestor": True}],
                source={"observer": {"display": "EMR"}},
                entity=[{"what": r} for r in refs],
            )
        elif rtype == "List":
            resource.update(status="current", mode="working", entry=[{"item": r} for r in refs])
        elif rtype == "Composition":
            resource.update(
                status="final",
                type={"text": "note"},
                date="2026-11-30",
                author=[staff],
                title="note",
                section=[{"title": "s", "entry": refs}],
            )
        else:
            resource.update(status="current", content=[{"attachment": {"url": "Binary/b1"}}])
            resource["context"] = {"related": refs}
        resource["id"] = self.new_id(tainted, "d")
        return resource

    def resource(self, scope: Scope | None, depth: int) -> dict[str, Any]:
        kinds = ["clinical", "clinical", "clinical", "patient", "bystander", "describing"]
        if depth > 0 and scope is not None:
            kinds += ["stored"]
        kind = self.draw(st.sampled_from(kinds))
        if kind == "clinical":
            return self.clinical(scope)
        if kind == "patient":
            return self.patient(scope)
        if kind == "bystander":
            return self.bystander()
        if kind == "describing":
            return self.describing(scope)
        return self.bundle(self.draw(st.sampled_from(["collection", "document", "searchset"])), depth - 1)

    # --- containers ------------------------------------------------------------------------------

    def bundle(self, kind: str, depth: int, top: bool = False) -> dict[str, Any]:
        self.n += 1
        scope = Scope(kind, self.n)
        count = self.draw(st.integers(1 if kind == "document" else 0, 4))
        stored = kind in ("collection", "document")
        self.stored += stored
        items = [self.resource(scope, depth) for _ in range(count)]
        self.stored -= stored
        if kind == "document":  # a Composition first, its sections naming the others by urn:uuid
            composition = self._composition(scope, items)
            items = [composition, *items]
        entries = []
        for item in items:
            entries.append(self._entry(kind, item, scope, top))
        extra = list(scope.entries)
        entries[len(entries) // 2 : len(entries) // 2] = [_entry_of(kind, e) for e in extra]
        carrying = [e for e in entries if any(s in _text(e) for s in self.world.secrets)]
        # A document is one unit; a collection is P's if an entry carries P by its own references.
        tainted = bool(carrying) and (
            kind == "document" or any(id(e["resource"]) not in self.indirect for e in carrying)
        )
        out: dict[str, Any] = {"resourceType": "Bundle", "type": kind}
        if carrying and not tainted:
            self.indirect.add(id(out))
        if kind in ("collection", "document"):  # stored: a resource of its own
            out["id"] = self.new_id(tainted, "bundle")
            out["timestamp"] = "2026-11-30T10:00:00Z"
            out["identifier"] = {"system": "https://hospital.example/documents", "value": out["id"]}
        if kind == "searchset":
            out["link"] = [{"relation": "self", "url": f"{HOST}/Observation?_count=10"}]
            if self.draw(st.booleans()):
                out["total"] = sum(1 for e in entries if (e.get("search") or {}).get("mode") == "match")
        out["entry"] = entries
        return out

    def plain_document(self) -> dict[str, Any]:
        """A document about V alone, by literal references, that the operator may read whole —
        unless it holds a Provenance or List about a record on the server they may not see."""
        w = self.world
        self.n += 1
        scope = Scope("document", self.n)
        items: list[dict[str, Any]] = []
        for _ in range(self.draw(st.integers(1, 3))):
            rtype = self.draw(st.sampled_from(["Observation", "Condition", "Encounter", "Procedure"]))
            record = {"resourceType": rtype, "id": self.new_id(False), **_required(rtype, {"text": "x"})}
            subject = self.draw(st.sampled_from([w.visible.ref, f"{HOST}/{w.visible.ref}"]))
            record[CLINICAL[rtype][0]] = {"reference": subject}
            items.append(record)
        if self.draw(st.booleans()):  # about records on the server: judged with them
            items.append(self.describing(None))
        composition: dict[str, Any] = {
            "resourceType": "Composition",
            "status": "final",
            "type": {"text": "出院小结"},
            "subject": {"reference": w.visible.ref},
            "date": "2026-11-30",
            "author": [{"reference": "Practitioner/dr-li"}],
            "title": "discharge summary",
            "section": [{"title": "all", "entry": []}],
        }
        entries = [{"fullUrl": scope.urn(), "resource": composition}]
        for item in items:
            entries.append({"fullUrl": scope.urn(), "resource": item})
            composition["section"][0]["entry"].append({"reference": entries[-1]["fullUrl"]})
        tainted = any(s in _text(entries) for s in w.secrets)  # a document is one unit
        composition["id"] = self.new_id(tainted, "c")
        return {
            "resourceType": "Bundle",
            "type": "document",
            "id": self.new_id(tainted, "bundle"),
            "timestamp": "2026-11-30T10:00:00Z",
            "entry": entries,
        }

    def _composition(self, scope: Scope, items: list[dict[str, Any]]) -> dict[str, Any]:
        w = self.world
        person = self.draw(st.sampled_from([w.visible, w.hidden]))
        urls = []
        for item in items:
            url = scope.urn()
            item["_fullUrl"] = url
            urls.append({"reference": url})
        composition: dict[str, Any] = {
            "resourceType": "Composition",
            "status": "final",
            "type": {"text": "出院小结"},
            "date": "2026-11-30",
            "author": [{"reference": "Practitioner/dr-li"}],
            "title": "discharge summary",
            "section": [{"title": "all", "entry": urls}],
        }
        ref, _ = self.reference(person, composition, scope, True)
        composition["subject"] = ref
        tainted = person is w.hidden or any(s in _text(items) for s in w.secrets)
        composition["id"] = self.new_id(tainted, "c")
        return composition

    def _entry(self, kind: str, resource: dict[str, Any], scope: Scope, top: bool) -> dict[str, Any]:
        url = resource.pop("_fullUrl", None)
        plain = resource.pop("_plain", False)
        if url is None:
            literal = f"{resource['resourceType']}/{resource.get('id')}"
            url = self.draw(st.sampled_from([f"{HOST}/{literal}", scope.urn()]))
        entry = _entry_of(kind, {"fullUrl": url, "resource": resource})
        if plain and top and kind == "searchset":
            self.world.must_keep.add(resource["id"])
        return entry

    def body(self) -> dict[str, Any]:
        kind = self.draw(
            st.sampled_from(
                ["searchset", "searchset", "history", "batch-response", "transaction-response"]
                + ["collection", "document", "resource", "Parameters"]
            )
        )
        if kind == "resource":
            resource = self.resource(None, 0)
            resource.pop("_plain", None)
            return resource
        if kind == "Parameters":
            inner = [self.resource(None, 0) for _ in range(self.draw(st.integers(1, 3)))]
            for r in inner:
                r.pop("_plain", None)
            return {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "return", "resource": inner[0]},
                    {"name": "more", "part": [{"name": "item", "resource": r} for r in inner[1:]]},
                ],
            }
        return self.bundle(kind, 1, top=True)


def _required(rtype: str, code: dict[str, Any]) -> dict[str, Any]:
    """The elements a record of this type needs besides its patient, with ``code`` as its content."""
    if rtype in ("Observation", "DiagnosticReport"):
        return {"status": "final", "code": code}
    if rtype == "Encounter":
        return {"status": "finished", "class": {"code": "AMB"}, "reasonCode": [code]}
    if rtype == "MedicationRequest":
        return {"status": "active", "intent": "order", "medicationCodeableConcept": code}
    if rtype == "Immunization":
        return {"status": "completed", "vaccineCode": code, "occurrenceDateTime": "2026-01-01"}
    if rtype == "CarePlan":
        return {"status": "active", "intent": "plan", "category": [code]}
    if rtype == "Flag":
        return {"status": "active", "code": code}
    if rtype == "Appointment":
        return {"status": "booked", "serviceType": [code]}
    if rtype == "Coverage":
        return {"status": "active", "payor": [{"reference": "Organization/ins"}], "type": code}
    return {"code": code}  # Condition, Procedure, AllergyIntolerance


def _entry_of(kind: str, entry: dict[str, Any]) -> dict[str, Any]:
    resource = entry["resource"]
    literal = f"{resource['resourceType']}/{resource.get('id', 'x')}"
    if kind == "searchset":
        entry["search"] = {"mode": "match" if resource["resourceType"] != "Patient" else "include"}
    elif kind == "history":
        entry["request"] = {"method": "PUT", "url": literal}
        entry["response"] = {"status": "200 OK", "etag": 'W/"2"', "lastModified": "2026-11-30T10:00:00Z"}
    elif kind in ("batch-response", "transaction-response"):
        entry["response"] = {"status": "200 OK", "location": f"{literal}/_history/1", "etag": 'W/"1"'}
    return entry


def _text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@st.composite
def scenarios(
    draw: st.DrawFn, care_bound: bool | None = None, about_local: bool = True
) -> tuple[World, dict[str, Any]]:
    """A world where P is hidden from the operator, and a response that mixes V's, P's and nobody's
    records in every container and reference shape the world's operator could meet."""
    world = draw(worlds(care_bound))
    builder = Builder(draw, world, unresolvable=world.care_bound, about_local=about_local)
    body = builder.body()
    _strip_marks(body)
    return world, body


def _strip_marks(node: Any) -> None:
    if isinstance(node, dict):
        node.pop("_plain", None)
        node.pop("_fullUrl", None)
        for v in node.values():
            _strip_marks(v)
    elif isinstance(node, list):
        for v in node:
            _strip_marks(v)


# --- what cannot be tied to a patient ----------------------------------------------------------

#: Someone no reference lets the gateway identify.
NOBODY = Person("nobody-1", "赵无名", "MRN-U0001", "44010119700101000X")
#: Types every role of these tests may read, care-bound or hospital-wide (pharmacists read few).
READ_BY_ALL = ("Observation", "Encounter", "AllergyIntolerance", "MedicationRequest")
UNATTRIBUTABLE = ("contained", "display", "identifier", "logical", "urn-nowhere", "dangling", "embedded")


@st.composite
def unattributable(draw: st.DrawFn) -> tuple[World, dict[str, Any], str, str]:
    """(world, body, the record's id, its shape): one record whose patient the gateway cannot name
    — a contained Patient, display or identifier only, a urn or `#` naming nothing, a Patient
    embedded in a stored Bundle — at the top of a page, as the answer itself, or in a collection."""
    world = draw(worlds(care_bound=draw(st.booleans())))
    shape = draw(st.sampled_from(UNATTRIBUTABLE))
    rtype = draw(st.sampled_from(READ_BY_ALL + (("Appointment",) if world.care_bound else ())))
    code = {"coding": [{"system": LOINC, "code": "8867-4"}], "text": "record"}  # ungraded
    record: dict[str, Any] = {"resourceType": rtype, "id": "rec-1", **_required(rtype, code)}
    entries: list[dict[str, Any]] = []
    person = NOBODY
    if shape == "contained":
        record["contained"] = [person.patient("p1")]
        ref: dict[str, Any] = {"reference": "#p1"}
    elif shape == "display":
        ref = {"display": person.name}
    elif shape == "identifier":
        ref = {"identifier": draw(st.sampled_from(person.identifiers()))}
    elif shape == "logical":
        ref = {"type": "Patient", "identifier": person.identifiers()[0], "display": person.name}
    elif shape == "urn-nowhere":
        ref = {"reference": "urn:uuid:0d1e2f3a-0000-4000-8000-000000000001"}
    elif shape == "dangling":
        ref = {"reference": "#gone"}
    else:  # embedded: a Patient inside the stored Bundle, with no identity the server vouches for
        urn = "urn:uuid:0d1e2f3a-0000-4000-8000-000000000002"
        entries.append({"fullUrl": urn, "resource": person.patient(None)})
        ref = {"reference": urn}
    element = CLINICAL.get(rtype, ("subject",))
    if len(element) == 2:
        record[element[0]] = [{element[1]: ref, "status": "accepted"}]
    else:
        record[element[0]] = ref
    where = (
        "collection" if shape == "embedded" else draw(st.sampled_from(["root", "searchset", "collection"]))
    )
    body: dict[str, Any]
    if where == "root":
        body = record
    elif where == "searchset":
        body = {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"fullUrl": f"{HOST}/{rtype}/rec-1", "resource": record, "search": {"mode": "match"}}],
        }
    else:
        body = {
            "resourceType": "Bundle",
            "type": "collection",
            "id": "coll-1",
            "entry": [{"fullUrl": f"{HOST}/{rtype}/rec-1", "resource": record}, *entries],
        }
    return world, body, "rec-1", shape


@st.composite
def documents(draw: st.DrawFn) -> tuple[World, dict[str, Any]]:
    """A response holding stored documents: the document itself, a page of them, a collection."""
    world = draw(worlds())
    builder = Builder(draw, world, unresolvable=world.care_bound)
    where = draw(st.sampled_from(["root", "searchset", "collection"]))
    if where == "root":
        body = builder.bundle("document", 1) if draw(st.booleans()) else builder.plain_document()
    else:
        body = builder.bundle(where, 0, top=False)
        for _ in range(draw(st.integers(1, 3))):
            doc = builder.bundle("document", 0) if draw(st.booleans()) else builder.plain_document()
            body["entry"].insert(
                draw(st.integers(0, len(body["entry"]))),
                _entry_of(where, {"fullUrl": f"{HOST}/Bundle/{doc['id']}", "resource": doc}),
            )
    _strip_marks(body)
    return world, body


# --- arbitrary input, for what must never crash ----------------------------------------------------

FHIR_KEYS = [
    "resourceType", "id", "entry", "resource", "contained", "reference", "subject", "patient", "type",
    "fullUrl", "parameter", "part", "identifier", "display", "meta", "security", "tag", "coding",
    "system", "code", "search", "mode", "response", "request", "status", "link", "total", "target",
    "entity", "what", "section", "item", "context", "related", "extension", "valueReference",
    "signature", "url", "method", "relation", "location", "etag", "text", "name", "birthDate", "actor",
    "participant", "versionId", "value", "outcome", "ifNoneExist", "ifMatch", "op", "path", "from",
]  # fmt: skip
TOKENS = [
    "Bundle", "Patient", "Observation", "Parameters", "OperationOutcome", "Provenance", "List",
    "Composition", "AuditEvent", "searchset", "history", "batch-response", "transaction-response",
    "collection", "document", "batch", "transaction", "match", "include", "next", "self",
    "Patient/p1", "patient/P1", "#p1", "#", "urn:uuid:1", "urn:", "Patient/../x", "Patient/_history",
    f"{HOST}/Patient/p1/_history/2", "Condition/c1", "GET", "get", "POST", "PUT", "DELETE", "PATCH",
    "200 OK", "403", "", "/", "?", "Patient?identifier=x", "Observation?subject=Patient/p1",
]  # fmt: skip
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8"), max_size=12)
    | st.sampled_from(TOKENS)
)
#: Any JSON value an upstream or a client could send (what orjson parses: 64-bit integers, finite
#: floats, valid Unicode), with FHIR's element names and values frequent.
json_values = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FHIR_KEYS) | st.text(max_size=4), inner, max_size=6)
    ),
    max_leaves=24,
)


@st.composite
def mangled(draw: st.DrawFn, bodies: st.SearchStrategy[Any]) -> Any:
    """A well-formed body with some of its values replaced by arbitrary JSON: the shapes a parser
    meets when an upstream or a client gets one element wrong."""
    body = copy.deepcopy(draw(bodies))
    nodes: list[tuple[Any, Any]] = []  # (container, key or index)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                nodes.append((node, k))
                walk(v)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                nodes.append((node, i))
                walk(v)

    walk(body)
    for _ in range(draw(st.integers(1, 3)) if nodes else 0):
        holder, key = draw(st.sampled_from(nodes))
        if isinstance(holder, list) and key >= len(holder):
            continue
        holder[key] = draw(json_values)
    return body


@st.composite
def any_body(draw: st.DrawFn) -> Any:
    """Arbitrary JSON, or a generated response with some values mangled."""
    return draw(st.one_of(json_values, mangled(scenarios().map(lambda s: s[1]))))


SEGMENTS = [
    "Patient", "Observation", "Condition", "Bundle", "Binary", "patient", "Unknown", "p1", "hid-1",
    "_history", "_search", "$everything", "$graphql", "$export", "$x-y", "$", "metadata", "1", "..",
    ".", "", "%2F", "Patient%2Fp1", "a b", "x" * 65, "_id", "Observation?x", "#",
]  # fmt: skip
paths = st.lists(st.sampled_from(SEGMENTS) | st.text(max_size=6), max_size=5).map("/".join)
methods = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "get", "post", "OPTIONS", ""])
PARAM_NAMES = [
    "patient", "subject", "subject:Patient", "patient:Patient", "beneficiary", "_id", "_id:not",
    "actor:Patient", "focus", "member", "code", "_format", "_summary", "_elements", "_has:Condition:patient:code",
    "subject.name", "Patient.name", "subject:Group", "_count", "", ":", "subject:", "patient.identifier",
]  # fmt: skip
PARAM_VALUES = [
    "p1", "Patient/p1", "patient/p1", f"{HOST}/Patient/p1", "Patient/p1/_history/2", "Group/g1",
    "p1,p2", ",", "", " ", "Patient/", "/", "Patient/..", "..", "x" * 70, "Patient/a b", "json",
    "application/fhir+xml", "text/html", "urn:uuid:1", "Patient?identifier=x", "Patient/p1,Patient/",
    "https://", "://", "Patient//p1", "a/b/c", "_history",
]  # fmt: skip
queries = st.lists(
    st.tuples(
        st.sampled_from(PARAM_NAMES) | st.text(max_size=6),
        st.sampled_from(PARAM_VALUES) | st.text(max_size=8),
    ),
    max_size=5,
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, list[tuple[str, str]], Any]:
    """(method, path, query, body): anything, or a batch or transaction posted to the base."""
    if draw(st.booleans()):
        return draw(methods), draw(paths), draw(queries), draw(request_bodies())
    return "POST", "", [], draw(request_bodies(bundle=True))


@st.composite
def request_bodies(draw: st.DrawFn, bundle: bool = False) -> Any:
    """What a client may send: arbitrary JSON, a resource, a JSON Patch, or a batch/transaction
    whose entries are drawn from the same paths, methods and queries."""
    kind = "bundle" if bundle else draw(st.sampled_from(["json", "resource", "patch", "bundle", "none"]))
    if kind == "none":
        return None
    if kind == "json":
        return draw(json_values)
    if kind == "resource":
        return draw(
            mangled(
                st.just({"resourceType": "Observation", "id": "o1", "subject": {"reference": "Patient/p1"}})
            )
        )
    if kind == "patch":
        op = st.fixed_dictionaries(
            {
                "op": st.sampled_from(["replace", "add", "remove"]),
                "path": st.sampled_from(["/subject", "/patient/reference", "/x", ""]),
            },
            optional={
                "value": json_values | st.fixed_dictionaries({"reference": st.sampled_from(PARAM_VALUES)})
            },
        )
        return draw(st.lists(op | json_values, max_size=3))
    entry = st.fixed_dictionaries(
        {"request": st.fixed_dictionaries({"method": methods, "url": st.builds(_url, paths, queries)})},
        optional={"resource": json_values, "fullUrl": st.sampled_from(TOKENS)},
    )
    posted = {
        "resourceType": "Bundle",
        "type": draw(st.sampled_from(["batch", "transaction", "collection"])),
        "entry": draw(st.lists(st.one_of(entry, json_values, mangled(entry)), min_size=1, max_size=3)),
    }
    return draw(mangled(st.just(posted))) if draw(st.booleans()) else posted


def _url(path: str, query: list[tuple[str, str]]) -> str:
    return path + (f"?{urlencode(query)}" if query else "")
