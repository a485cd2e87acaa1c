# I.4 minimum necessary, for teaching and research: what the answer withholds (names, identifiers,
# telecom, addresses, birth dates finer than the year: emr.fields) may not be searched by either, or
# a search would find the one person a value belongs to and hand back their records — for research
# with their pseudonym, linking them to every pseudonymised record. For purposes whose answers are
# pseudonymised (HRESCH), a request names records only by the pseudonyms it was given: the gateway
# maps those back (gateway/fhir/pseudonyms.py) and marks every id a request names in
# input.target.ids; a real id, known from elsewhere, is refused. Data: emr/config/research/data.json.
# Decided with the side channels (emr.sidechannel.deny includes these refusals).

# METADATA
# title: Research and teaching without re-identification
# description: >-
#   For TRAIN and HRESCH no search selects records by a direct identifier (identifier, name parts,
#   telecom, address, a birth date finer than the year), also through chains, _has and
#   reference:identifier; for pseudonymised purposes every id a request names must be a pseudonym.
# custom:
#   clauses: [I.4]
package emr.research

import rego.v1

cfg := data.emr.config.research

# The purpose sees no direct identifiers, and no active role is exempt from that (emr.fields).
deidentified if {
	data.emr.lib.purpose in cfg.deidentified_purposes
	data.emr.fields.applies
}

# Every type's identifying parameters: for a chain whose link does not name its type.
all_identifying := {n | some _, names in cfg.identifying_params; some n in names}

all_year_only := {n | some _, names in cfg.year_only_params; some n in names}

identifying_names(t) := all_identifying if {
	t == "?"
} else := {n | some k in [t, "*"]; some n in object.get(cfg.identifying_params, k, [])}

year_only_names(t) := all_year_only if {
	t == "?"
} else := {n | some n in object.get(cfg.year_only_params, t, [])}

nth(a, i) := a[i] if {
	count(a) > i
} else := ""

# What a search key selects by, {type, name, modifier}: the last link of a chain (of the type its
# previous link names, else "?": any type), the innermost parameter of _has, or the key itself.
selection(ty, k) := s if {
	contains(k, ".")
	links := split(k, ".")
	prev := split(links[count(links) - 2], ":")
	last := split(links[count(links) - 1], ":")
	s := {"type": chain_type(prev), "name": last[0], "modifier": nth(last, 1)}
} else := s if {
	startswith(k, "_has:")
	segs := split(k, ":")
	i := max({j | some j, seg in segs; seg == "_has"})
	count(segs) > i + 3
	s := {"type": segs[i + 1], "name": segs[i + 3], "modifier": nth(segs, i + 4)}
} else := s if {
	parts := split(k, ":")
	s := {"type": ty, "name": parts[0], "modifier": nth(parts, 1)}
}

chain_type(prev) := prev[1] if {
	count(prev) == 2
	prev[1] != ""
} else := "?"

# The gateway sends each parameter as an array of strings; anything else is read as one value.
values(vs) := vs if is_array(vs)

else := [vs]

# Every value a date at the year's precision (with a prefix or not), or a :missing test.
year_precision(s, _) if s.modifier == "missing"

year_precision(s, vs) if {
	s.modifier == ""
	every v in values(vs) {
		every item in split(data.emr.lib.as_string(v), ",") {
			regex.match(cfg.year_pattern, trim_space(item))
		}
	}
}

identifying(ty, k, _) if {
	s := selection(ty, k)
	s.modifier in cfg.identifying_modifiers
}

identifying(ty, k, _) if {
	s := selection(ty, k)
	s.name in identifying_names(s.type)
}

identifying(ty, k, vs) if {
	s := selection(ty, k)
	s.name in year_only_names(s.type)
	not year_precision(s, vs)
}

# I.4: no search by a direct identifier for a purpose that does not see them.
deny contains r if {
	deidentified
	some t in data.emr.lib.targets
	keys := {k | some k, vs in t.params; identifying(t.type, k, vs)}
	count(keys) > 0
	r := data.emr.lib.reason(
		"search.identifying", "I.4",
		sprintf("%ssearch parameters %s select people by a direct identifier (identifier, name, telecom, address, a birth date finer than the year), which purpose %s does not show: records are found by their content, never by who they are; a birth date by its year only (birthdate=1980, birthdate=ge1980)", [t.where, data.emr.lib.joined(keys), data.emr.lib.purpose]),
		sprintf("%s检索参数 %s 按个人直接标识(标识符、姓名、联系方式、地址、精确到年以下的出生日期)筛选,而以 %s 为目的不显示这些信息:只能按记录内容检索,不能按身份检索;出生日期仅可按年份检索(如 birthdate=1980、birthdate=ge1980)", [t.where, data.emr.lib.joined(keys), data.emr.lib.purpose]),
	)
}

# The ids each target names in the clear (input.target.ids and each entry's: id -> named by its
# pseudonym), as [where, id].
real_ids contains ["", ref] if {
	some ref, pseudonym in main_ids
	pseudonym != true
}

real_ids contains [where, ref] if {
	some i, e in data.emr.lib.target_entries
	some ref, pseudonym in data.emr.lib.as_object(object.get(data.emr.lib.as_object(e), "ids", {}))
	pseudonym != true
	where := sprintf("Bundle.entry[%d]: ", [i])
}

# And every patient a target reaches, in any spelling the gateway reads (a body's Parameters, a
# lower-case `patient/…`): named by its pseudonym, or it is a real id (fail closed). The gateway
# always sends `ids` (an input without it is not the gateway's: the shared test fixtures).
main_ids := data.emr.lib.as_object(object.get(data.emr.lib.target, "ids", {}))

real_ids contains ["", p] if {
	is_object(object.get(data.emr.lib.target, "ids", null))
	some p in data.emr.lib.main_target.patients
	object.get(main_ids, p, false) != true
}

real_ids contains [where, p] if {
	some i, raw in data.emr.lib.target_entries
	e := data.emr.lib.as_object(raw)
	ids := e.ids
	is_object(ids)
	some p in data.emr.lib.patient_set(object.get(e, "patients", []))
	object.get(ids, p, false) != true
	where := sprintf("Bundle.entry[%d]: ", [i])
}

# I.4: answers pseudonymised, requests in pseudonyms: a real id would tie a person to a pseudonym.
deny contains r if {
	data.emr.fields.pseudonymise
	some where in {w | some [w, _] in real_ids}
	r := data.emr.lib.reason_with_detail(
		"pseudonym.real-id", "I.4",
		sprintf("%sthe answers for purpose %s are pseudonymised: name records only by the pseudonyms (ps-...) of your own answers; a real id would tie a person to their pseudonym", [where, data.emr.lib.purpose]),
		sprintf("%s以 %s 为目的的结果已做假名化处理:只能用您所获结果中的假名(ps-...)指代记录;使用真实 id 会把个人与其假名关联起来", [where, data.emr.lib.purpose]),
		{"ids": sort([id | some [w2, id] in real_ids; w2 == where])},
	)
}
