# I.4 落实分级管理: every record gets a grade 1-5 (GB/T 39725-2020: 1 public ... 5 very sensitive)
# by its importance and sensitivity: a base grade per resource type, raised by sensitive codes, by
# security labels (meta.security; meta.tag too: a label can only raise) and by flags on the patient
# (VIP, staff). grade = the highest that applies.
# Data the security team edits: emr/config/classification/data.json (data.emr.config.classification).

# METADATA
# title: Record grades
# description: >-
#   Every record gets a grade 1-5 (GB/T 39725-2020), the highest of its resource type's base grade,
#   its sensitive codes, its security labels and tags, and its patients' flags.
# custom:
#   clauses: [I.4]
package emr.grading

import rego.v1

cfg := data.emr.config.classification

base(t) := object.get(cfg.type_grades, t, cfg.default_grade)

# Code system URL -> its alias in the data (ICD-10, LOINC).
system_alias[url] := alias if {
	some alias, urls in cfg.code_systems
	some url in urls
}

# ICD-10 codes are hierarchical: every prefix is looked up ("F10.2": F, F1, F10, F10., F10.2) and the
# highest grade wins. LOINC and SNOMED codes are not (listed in exact_match_systems): one lookup.
code_grades(codes) := [g |
	some c in codes
	alias := system_alias[c.system]
	table := cfg.sensitive_codes[alias] # bound once: a lookup through cfg in the loop costs ~20 µs in regorus
	is_string(c.code)
	some key in lookup_keys(alias, upper(c.code))
	g := table[key].grade
]

lookup_keys(alias, code) := [code] if {
	alias in cfg.exact_match_systems
} else := [substring(code, 0, n) | some n in numbers.range(1, count(code))]

label_grades(labels) := [g |
	table := cfg.security_labels
	some l in labels
	g := table[l.system][l.code]
]

# Per patient of the input, once per query: the grade its flags impose.
flag_grade[p] := g if {
	some p, ctx in data.emr.lib.patients
	is_array(ctx.flags)
	count(ctx.flags) > 0
	table := cfg.patient_flags
	g := max({x | some f in ctx.flags; x := table[f]})
}

flag_grades(ps) := [g | some p in ps; g := flag_grade[p]]

# The least grade anything a request target reaches can have (known before the server answers):
# the base grade of the type read or written, and the patients' flags.
floor(t) := max(array.concat(array.concat([1], type_floor(t)), flag_grades(t.patients)))

type_floor(t) := [base(t.type)] if {
	t.type != ""
	t.kind in {"read", "write", "delete", "operation"}
} else := []
