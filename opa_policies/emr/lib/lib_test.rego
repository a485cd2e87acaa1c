package emr.lib_test

import rego.v1

import data.emr.lib

test_kinds if {
	lib.kind("read", "") == "read"
	lib.kind("history-system", "") == "read"
	lib.kind("patch", "") == "write"
	lib.kind("delete", "") == "delete"
	lib.kind("operation", "$export") == "export"
	lib.kind("operation", "$graphql") == "graphql"
	lib.kind("graphql", "") == "graphql"
	lib.kind("operation", "$everything") == "operation"
	lib.kind("transaction", "") == "container"
	lib.kind("frobnicate", "") == "unknown"
	lib.entry_kind("batch", "") == "unknown"
	lib.entry_kind("read", "") == "read"
}

test_action_name if {
	lib.action_name("operation", "$everything") == "$everything"
	lib.action_name("operation", "") == "operation"
	lib.action_name("read", "") == "read"
}

test_normalisation if {
	lib.as_object(1) == {}
	lib.as_array("x") == []
	lib.as_string(null) == ""
	lib.subject_roles == {"nurse"} with input as {"subject": {"roles": ["nurse", 3, null]}}
	lib.purpose == "" with input as {"purpose": null}
	lib.patients == {} with input as {"patients": null}
}

test_alert if {
	lib.alert("e", "high", {"b", "a"}, "en", "zh").patients == ["a", "b"]
}

test_targets_of_a_transaction if {
	inp := {
		"action": {"interaction": "transaction"},
		"target": {"patients": ["Patient/a", "Patient/b"], "entries": [{"interaction": "read", "type": "Patient", "patients": ["Patient/a"]}]},
	}
	ts := lib.targets with input as inp
	count(ts) == 2
	{t.kind | some t in ts} == {"container", "read"}
	{p | some t in ts; t.kind == "container"; some p in t.patients} == {"Patient/b"}
	lib.request_patients == {"Patient/a", "Patient/b"} with input as inp
}

test_capabilities_have_no_targets if {
	lib.targets == set() with input as {"action": {"interaction": "capabilities"}}
}
