"""Unit tests for the FHIR request model (gateway/fhir/request.py).

The policy decides on what ``parse_request`` reports, so every interaction must be recognised and
every patient it targets must be found; anything not understood must be refused with 400
(I.4: access control is only as good as the request model).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.errors import GatewayError
from gateway.fhir.params import check_format, parse_params
from gateway.fhir.request import FhirRequest, parse_request


def obs(subject: str = "Patient/p1", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "heart rate"},
        "subject": {"reference": subject},
    }
    body.update(extra)
    return body


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def entry(method: str, url: str, resource: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"request": {"method": method, "url": url}}
    if resource is not None:
        out["resource"] = resource
    return out


def refused(
    method: str, path: str, query: list[tuple[str, str]] | None = None, body: Any = None
) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        parse_request(method, path, query or [], body)
    assert info.value.status == 400, info.value
    assert info.value.code == "invalid"
    return info.value


# --- interactions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "interaction", "level", "rtype", "rid"),
    [
        ("GET", "Observation/o1", "read", "instance", "Observation", "o1"),
        ("PUT", "Observation/o1", "update", "instance", "Observation", "o1"),
        ("PATCH", "Observation/o1", "patch", "instance", "Observation", "o1"),
        ("DELETE", "Observation/o1", "delete", "instance", "Observation", "o1"),
        ("GET", "Observation/o1/_history", "history-instance", "instance", "Observation", "o1"),
        ("GET", "Observation/_history", "history-type", "type", "Observation", None),
        ("GET", "_history", "history-system", "system", None, None),
        ("POST", "Observation", "create", "type", "Observation", None),
        ("GET", "Observation", "search-type", "type", "Observation", None),
        ("POST", "Observation/_search", "search-type", "type", "Observation", None),
        ("GET", "", "search-system", "system", None, None),
        ("POST", "_search", "search-system", "system", None, None),
        ("GET", "metadata", "capabilities", "system", None, None),
    ],
)
def test_interactions_are_recognised(method, path, interaction, level, rtype, rid):
    """Each RESTful interaction gets its own name, level, type and id (I.4: the policy keys on them)."""
    body: Any = None
    if method == "PUT":
        body = obs(id="o1")
    elif method == "POST" and path == "Observation":
        body = obs()
    elif method == "PATCH":
        body = [{"op": "replace", "path": "/status", "value": "amended"}]
    req = parse_request(method, path, [], body)
    assert (req.interaction, req.level, req.resource_type, req.id) == (interaction, level, rtype, rid)
    assert req.method == method
    assert req.conditional is False


def test_method_is_case_insensitive():
    req = parse_request("get", "Patient/p1", [])
    assert (req.method, req.interaction) == ("GET", "read")


def test_vread_keeps_version_id():
    req = parse_request("GET", "Observation/o1/_history/3", [])
    assert (req.interaction, req.id, req.version_id) == ("vread", "o1", "3")


def test_write_flag_follows_interaction():
    """I.3: writes go through validation and write rules; reads do not count as writes."""
    assert parse_request("DELETE", "Observation/o1", []).is_write
    assert parse_request("POST", "Observation", [], obs()).is_write
    assert not parse_request("GET", "Observation/o1", []).is_write
    assert not parse_request("POST", "Observation/_search", [("code", "x")]).is_write
    reads = bundle("batch", entry("GET", "Patient/p1"), entry("GET", "Observation/o1"))
    assert not parse_request("POST", "", [], reads).is_write
    mixed = bundle("transaction", entry("GET", "Patient/p1"), entry("DELETE", "Observation/o1"))
    assert parse_request("POST", "", [], mixed).is_write


@pytest.mark.parametrize(
    ("method", "path", "level", "rtype", "rid", "operation"),
    [
        ("GET", "$export", "system", None, None, "$export"),
        ("GET", "Patient/$export", "type", "Patient", None, "$export"),
        ("GET", "Group/g1/$export", "instance", "Group", "g1", "$export"),
        ("GET", "Patient/p1/$everything", "instance", "Patient", "p1", "$everything"),
        ("POST", "Observation/$lastn", "type", "Observation", None, "$lastn"),
        ("POST", "$reindex-all", "system", None, None, "$reindex-all"),
    ],
)
def test_operations_at_every_level(method, path, level, rtype, rid, operation):
    req = parse_request(method, path, [])
    assert req.interaction == "operation"
    assert (req.level, req.resource_type, req.id, req.operation) == (level, rtype, rid, operation)


def test_everything_targets_its_patient():
    """I.4: Patient/x/$everything discloses x's whole record, so x is a target."""
    assert parse_request("GET", "Patient/p9/$everything", []).all_patients() == ["Patient/p9"]


@pytest.mark.parametrize("path", ["$graphql", "Patient/p1/$graphql"])
def test_graphql_is_its_own_interaction(path):
    """GraphQL can reach any resource; the policy must see it as graphql, not as a plain operation."""
    req = parse_request("POST", path, [], None)
    assert req.interaction == "graphql"
    assert req.operation == "$graphql"


def test_instance_graphql_targets_patient():
    assert parse_request("GET", "Patient/p1/$graphql", [("query", "{name}")]).patients == {"Patient/p1"}


def test_operation_parameters_body_names_patient():
    """A Parameters body can name the patient an operation is about (I.4)."""
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "patient", "valueReference": {"reference": "Patient/p7"}},
            {"name": "subject", "valueString": "http://h/fhir/Patient/p8"},
            {"name": "beneficiary", "valueId": "p9"},
            {"name": "subject", "valueReference": {"reference": "Group/g1"}},
            {"name": "count", "valueInteger": 3},
        ],
    }
    req = parse_request("POST", "Observation/$lastn", [], body)
    assert req.patients == {"Patient/p7", "Patient/p8", "Patient/p9"}


def test_batch_and_transaction_parse_their_entries():
    for kind in ("batch", "transaction"):
        req = parse_request(
            "POST", "", [], bundle(kind, entry("GET", "Patient/p1"), entry("POST", "Observation", obs()))
        )
        assert req.interaction == kind
        assert req.level == "system"
        assert [(e.interaction, e.resource_type) for e in req.entries] == [
            ("read", "Patient"),
            ("create", "Observation"),
        ]


def test_bundle_without_entries_is_an_empty_batch():
    req = parse_request("POST", "", [], {"resourceType": "Bundle", "type": "batch"})
    assert req.interaction == "batch"
    assert req.entries == []


# --- conditional interactions ----------------------------------------------------------------------


def test_conditional_update_reads_patient_from_body_and_params():
    req = parse_request(
        "PUT", "Observation", [("identifier", "lab|42"), ("patient", "p2")], obs("Patient/p1")
    )
    assert (req.interaction, req.level, req.conditional, req.id) == ("update", "type", True, None)
    assert req.patients == {"Patient/p1", "Patient/p2"}


def test_conditional_delete_and_patch():
    delete = parse_request("DELETE", "Observation", [("patient", "Patient/p3")])
    assert (delete.interaction, delete.conditional) == ("delete", True)
    assert delete.patients == {"Patient/p3"}
    patch = parse_request("PATCH", "Observation", [("identifier", "x")], [])
    assert (patch.interaction, patch.conditional) == ("patch", True)


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_type_level_write_without_condition_is_refused(method):
    """An unconditional PUT/PATCH/DELETE on a whole type is no FHIR interaction: refuse (I.4)."""
    err = refused(method, "Observation", [], obs())
    assert err.reasons[0].rule == "fhir.unknown-interaction"


# --- compartment search ----------------------------------------------------------------------------


def test_patient_compartment_search():
    """Patient/x/Observation is Observation searched in x's compartment: x is the target (I.4)."""
    req = parse_request("GET", "Patient/p5/Observation", [("code", "8867-4")])
    assert req.interaction == "search-type"
    assert req.level == "type"
    assert req.resource_type == "Observation"
    assert req.id is None
    assert req.compartment == "Patient/p5"
    assert req.patients == {"Patient/p5"}
    assert req.params == {"code": ["8867-4"]}


def test_compartment_search_adds_patients_from_params():
    req = parse_request("GET", "Patient/p5/Observation", [("subject", "Patient/p6")])
    assert req.patients == {"Patient/p5", "Patient/p6"}


def test_compartment_of_unknown_type_is_refused():
    assert refused("GET", "Patient/p5/Nonsense").reasons[0].rule == "fhir.unknown-type"


def test_non_patient_compartment_is_refused():
    """Only the Patient compartment is modelled; another one must not be guessed at."""
    refused("GET", "Encounter/e1/Observation")


# --- patients targeted -----------------------------------------------------------------------------


def test_patient_read_targets_path_id():
    assert parse_request("GET", "Patient/p1", []).patients == {"Patient/p1"}


def test_non_patient_read_targets_nobody_by_itself():
    assert parse_request("GET", "Observation/o1", []).patients == set()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("patient", "p1"),
        ("patient", "Patient/p1"),
        ("patient", "http://host/fhir/Patient/p1"),
        ("patient", "https://host/fhir/Patient/p1/_history/4"),
        ("patient:Patient", "p1"),
        ("subject", "Patient/p1"),
        ("subject:Patient", "p1"),
        ("subject", " Patient/p1 "),
    ],
)
def test_patient_search_spellings(key, value):
    """Every spelling of a patient-valued parameter reaches the policy as 'Patient/x' (I.4)."""
    req = parse_request("GET", "Observation", [(key, value)])
    assert req.patients == {"Patient/p1"}
    assert parse_request("GET", "Coverage", [("beneficiary", "Patient/p1")]).patients == {"Patient/p1"}


def test_comma_separated_and_repeated_patient_values():
    req = parse_request(
        "GET", "Observation", [("patient", "p1,Patient/p2"), ("subject", "Patient/p3,Group/g1")]
    )
    assert req.patients == {"Patient/p1", "Patient/p2", "Patient/p3"}


def test_patient_id_search_targets_each_id():
    req = parse_request("GET", "Patient", [("_id", "a,b"), ("_id", "c")])
    assert req.patients == {"Patient/a", "Patient/b", "Patient/c"}


def test_id_search_on_other_types_is_not_a_patient():
    assert parse_request("GET", "Observation", [("_id", "o1")]).patients == set()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("subject", "Group/g1"),
        ("subject", "Device/d1"),
        ("subject:Group", "g1"),
        ("subject.name", "Zhang"),
        ("patient.identifier", "mrn|123"),
        ("subject:Patient.name", "Zhang"),
        ("patient:missing", "true"),
    ],
)
def test_values_that_do_not_name_a_patient(key, value):
    """A Group subject, a chained search or another parameter is not a patient id (no guessing)."""
    req = parse_request("GET", "Observation", [(key, value)])
    assert req.patients == set()
    assert req.params == {key: [value]}  # the policy still sees the raw parameter


@pytest.mark.parametrize(
    ("rtype", "key"),
    [
        ("Appointment", "actor"),
        ("Observation", "focus"),
        ("Provenance", "target"),
        ("Communication", "recipient"),
        ("Group", "member"),
        ("Observation", "code"),
    ],
)
def test_any_parameter_naming_a_patient_reference_targets_the_patient(rtype, key):
    """Sealing and the care relationship hold whichever link a search follows (I.4): a value that
    is a Patient reference names that patient, whatever the parameter (each a parameter of its type:
    the gateway forwards no other, gateway/fhir/params.py check_search)."""
    assert parse_request("GET", rtype, [(key, "Patient/p1")]).patients == {"Patient/p1"}
    if key != "code":  # a token takes no type modifier
        assert parse_request("GET", rtype, [(f"{key}:Patient", "p2")]).patients == {"Patient/p2"}


def test_bad_patient_reference_is_refused():
    assert refused("GET", "Observation", [("patient", "Patient/a_b")]).reasons[0].rule == "fhir.bad-id"
    refused("GET", "Observation", [("patient", "foo/bar")])


def test_create_body_subject_is_a_target():
    """I.3/I.4: writing an Observation about x is a use of x's record."""
    req = parse_request("POST", "Observation", [], obs("Patient/p4"))
    assert req.patients == {"Patient/p4"}
    assert req.conditional is False


def test_update_body_subject_and_patient_id_are_targets():
    req = parse_request("PUT", "Observation/o1", [], obs("http://h/fhir/Patient/p4", id="o1"))
    assert req.patients == {"Patient/p4"}
    put_patient = parse_request("PUT", "Patient/p8", [], {"resourceType": "Patient", "id": "p8"})
    assert put_patient.patients == {"Patient/p8"}


def test_bundle_entries_union_of_patients():
    """A batch/transaction targets every patient any of its entries targets (I.4)."""
    req = parse_request(
        "POST",
        "",
        [],
        bundle(
            "transaction",
            entry("POST", "Observation", obs("Patient/a")),
            entry("GET", "Patient/b"),
            entry("DELETE", "Observation?subject:Patient=c"),
            entry("GET", "Patient/d/$everything"),
            entry("PUT", "Observation/o9", {**obs("Patient/e"), "id": "o9"}),
        ),
    )
    assert req.patients == set()  # the bundle itself names nobody ...
    assert req.all_patients() == ["Patient/a", "Patient/b", "Patient/c", "Patient/d", "Patient/e"]
    assert [e.interaction for e in req.entries] == ["create", "read", "delete", "operation", "update"]
    assert req.entries[2].conditional is True


@pytest.mark.parametrize(
    "url",
    ["Observation?patient=p1", "Patient/d/Observation", "Patient?_id=e", "Patient/p1/_history", "_history"],
)
def test_a_search_or_history_inside_a_batch_is_refused(url: str) -> None:
    """The gateway builds pages itself (gateway/pages.py); a page nested in a batch answer would be
    the upstream's, its size telling that withheld matches exist (red team, I.4)."""
    with pytest.raises(GatewayError) as exc:
        parse_request("POST", "", [], bundle("batch", entry("GET", "Patient/p1"), entry("GET", url)))
    assert exc.value.status == 400 and exc.value.reasons[0].rule == "fhir.search-in-batch"
    assert exc.value.reasons[0].en.startswith("Bundle.entry[1]: ")


def test_entry_url_query_is_percent_decoded():
    req = parse_request(
        "POST",
        "",
        [],
        bundle("batch", entry("DELETE", "Observation?patient=http%3A%2F%2Fh%2Ffhir%2FPatient%2Fq")),
    )
    assert req.all_patients() == ["Patient/q"]


# --- malformed requests ----------------------------------------------------------------------------


def test_unknown_resource_type():
    err = refused("GET", "Patients/p1")
    assert err.reasons[0].rule == "fhir.unknown-type"
    assert "Patients" in err.reasons[0].en


@pytest.mark.parametrize("rid", ["a_b", "a$b", "a%20b", "x" * 65, "a:b"])
def test_bad_id_characters(rid):
    assert refused("GET", f"Patient/{rid}").reasons[0].rule == "fhir.bad-id"


def test_longest_legal_id_is_accepted():
    assert parse_request("GET", "Patient/" + "x" * 64, []).id == "x" * 64


def test_bad_version_id():
    assert refused("GET", "Patient/p1/_history/v_1").reasons[0].rule == "fhir.bad-id"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", ""),
        ("PUT", ""),
        ("GET", "Patient/p1/_history/1/extra"),
        ("POST", "Patient/p1"),
        ("HEAD", "Patient/p1"),
        ("POST", "Patient/p1/_history"),
        ("GET", "Patient/p1/$everything/extra"),
        ("DELETE", "Patient/p1/$everything"),
        ("GET", "Patient/$bad!name"),
        ("POST", "Patient/p1/Observation"),
        ("GET", "Patient/p1/Observation/o1"),
    ],
)
def test_unsupported_shapes(method, path):
    assert refused(method, path, [], obs()).reasons[0].rule == "fhir.unknown-interaction"


def test_empty_parameter_name():
    refused("GET", "Observation", [("", "x")])
    with pytest.raises(GatewayError):
        parse_params([("", "x")])


def test_put_body_id_must_match_url():
    err = refused("PUT", "Observation/o1", [], obs(id="o2"))
    assert "o2" in err.reasons[0].en and "o1" in err.reasons[0].en
    refused("PUT", "Observation/o1", [], obs())  # no id at all


def test_body_resource_type_must_match_url():
    err = refused(
        "POST", "Observation", [], {"resourceType": "Condition", "subject": {"reference": "Patient/p"}}
    )
    assert "Condition" in err.reasons[0].en
    refused("PUT", "Observation/o1", [], {"resourceType": "Patient", "id": "o1"})


@pytest.mark.parametrize("body", [None, [], "x", {"status": "final"}, {"resourceType": 3}])
def test_create_body_must_be_a_resource(body):
    refused("POST", "Observation", [], body)


def test_bundle_posted_to_base_must_be_batch_or_transaction():
    refused("POST", "", [], bundle("searchset"))
    refused("POST", "", [], bundle("collection"))
    refused("POST", "", [], obs())


def test_entry_without_request():
    err = refused("POST", "", [], bundle("batch", entry("GET", "Patient/p1"), {"resource": obs()}))
    assert "Bundle.entry[1]" in err.reasons[0].en
    assert "Bundle.entry[1]" in err.reasons[0].zh


def test_entry_request_needs_string_method_and_url():
    refused("POST", "", [], bundle("batch", {"request": {"method": "GET"}}))
    refused("POST", "", [], bundle("batch", {"request": {"method": 1, "url": "Patient"}}))
    refused("POST", "", [], bundle("batch", "not an entry"))
    refused("POST", "", [], {"resourceType": "Bundle", "type": "batch", "entry": {"request": {}}})


def test_absolute_entry_url_is_refused():
    """An absolute URL could point the server anywhere; the model only covers this server."""
    err = refused("POST", "", [], bundle("batch", entry("GET", "https://other.example/fhir/Patient/p1")))
    assert "Bundle.entry[0]" in err.reasons[0].en


def test_nested_entry_error_names_the_entry():
    err = refused(
        "POST",
        "",
        [],
        bundle("transaction", entry("GET", "Patient/p1"), entry("GET", "Nonsense/1")),
    )
    reason = err.reasons[0]
    assert reason.rule == "fhir.unknown-type"  # the inner rule is kept
    assert reason.en.startswith("Bundle.entry[1]: ")
    assert "Nonsense" in reason.en
    assert reason.zh.startswith("Bundle.entry[1]")


def test_batch_may_not_nest():
    inner = bundle("batch", entry("GET", "Patient/p1"))
    err = refused("POST", "", [], bundle("batch", entry("POST", "", inner)))
    assert err.reasons[0].en.startswith("Bundle.entry[0]: ")


@pytest.mark.parametrize("path", ["Patient/../Observation", "Patient/../_history", "Patient/../$export"])
def test_dot_segments_are_refused(path):
    """I.4: the policy must decide on what the upstream server will actually be asked."""
    refused("GET", path)


def test_id_with_trailing_newline_is_refused():
    refused("GET", "Patient/abc\n")


# --- response format -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "accept"),
    [
        ({"_format": ["xml"]}, ""),
        ({"_format": ["application/fhir+xml"]}, ""),
        ({"_format": ["text/turtle"]}, ""),
        ({"_format": ["json", "xml"]}, ""),
        ({}, "application/fhir+xml"),
        ({}, "application/xml, text/html"),
        ({"_format": ["json"]}, "application/fhir+xml"),
    ],
)
def test_non_json_formats_are_not_acceptable(params, accept):
    """An XML body would pass the per-resource filter unseen, so it is never served (I.4)."""
    with pytest.raises(GatewayError) as info:
        check_format(params, accept)
    assert info.value.status == 406
    assert info.value.reasons[0].rule == "fhir.format-not-acceptable"


@pytest.mark.parametrize(
    ("params", "accept"),
    [
        ({}, ""),
        ({"_format": ["json"]}, ""),
        ({"_format": [" JSON "]}, ""),
        ({"_format": ["application/fhir+json"]}, ""),
        ({"_format": ["application/json"]}, ""),
        ({"_format": ["application/json+fhir"]}, ""),
        ({}, "application/fhir+json"),
        ({}, "application/fhir+json; fhirVersion=4.0; charset=utf-8"),
        ({}, "application/json"),
        ({}, "*/*"),
        ({}, "application/*"),
        ({}, "application/fhir+xml;q=0.9, application/fhir+json"),
    ],
)
def test_json_formats_pass(params, accept):
    check_format(params, accept)


def test_format_parameter_with_media_type_parameters_passes():
    check_format({"_format": ["application/fhir+json;fhirVersion=4.0"]}, "")


# --- policy input -----------------------------------------------------------------------------------


def test_to_policy_shape():
    """The policy input names the action and every target (I.4), as opa_policies/README.md defines."""
    req = parse_request(
        "POST",
        "",
        [],
        bundle(
            "transaction",
            entry("PUT", "Observation/o1", obs("Patient/a", id="o1")),
            entry("GET", "Patient/b/$everything"),
        ),
    )
    out = req.to_policy()
    assert set(out) == {"action", "target"}
    assert out["action"] == {
        "interaction": "transaction",
        "method": "POST",
        "level": "system",
        "operation": None,
        "conditional": False,
    }
    target = out["target"]
    assert set(target) == {
        "type",
        "id",
        "compartment",
        "patients",
        "params",
        "if_none_exist",
        "ids",
        "entries",
    }
    assert target["patients"] == ["Patient/a", "Patient/b"]
    assert target["entries"] == [
        {
            "interaction": "update",
            "conditional": False,
            "method": "PUT",
            "type": "Observation",
            "id": "o1",
            "operation": None,
            "patients": ["Patient/a"],
            "params": {},
            "ids": {},
        },
        {
            "interaction": "operation",
            "conditional": False,
            "method": "GET",
            "type": "Patient",
            "id": "b",
            "operation": "$everything",
            "patients": ["Patient/b"],
            "params": {},
            "ids": {},
        },
    ]


def test_to_policy_for_compartment_search():
    out = parse_request("GET", "Patient/p1/Condition", [("clinical-status", "active")]).to_policy()
    assert out["action"]["interaction"] == "search-type"
    assert out["target"]["type"] == "Condition"
    assert out["target"]["id"] is None
    assert out["target"]["compartment"] == "Patient/p1"
    assert out["target"]["patients"] == ["Patient/p1"]
    assert out["target"]["params"] == {"clinical-status": ["active"]}
    assert out["target"]["entries"] == []


def test_to_policy_is_plain_data():
    """The policy input is serialised to JSON for OPA: only lists, dicts and scalars, no sets."""
    req: FhirRequest = parse_request("GET", "Observation", [("patient", "a,b")])
    assert json.loads(json.dumps(req.to_policy()))["target"]["patients"] == ["Patient/a", "Patient/b"]


def test_json_patch_moving_a_record_targets_the_new_patient():
    """A patch that re-points `subject` writes into another patient's record (I.3, I.4)."""
    body = [{"op": "replace", "path": "/subject", "value": {"reference": "Patient/other"}}]
    req = parse_request("PATCH", "Observation/o1", [], body)
    assert req.interaction == "patch"
    assert req.all_patients() == ["Patient/other"]
    body = [{"op": "replace", "path": "/subject/reference", "value": "Patient/p9"}]
    assert parse_request("PATCH", "Observation/o1", [], body).all_patients() == ["Patient/p9"]
