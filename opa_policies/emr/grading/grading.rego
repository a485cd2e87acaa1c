# I.4 落实分级管理: every record gets a grade 1-5 (GB/T 39725-2020: 1 public ... 5 very sensitive)
# by its importance and sensitivity: a base grade per resource type, raised by sensitive codes, by
# security labels (meta.security; meta.tag too: a label can only raise) and by flags on the patient
# (VIP, staff). grade = the highest that applies.
# Data the security team edits: emr/config/classification/data.json (data.emr.config.classification).

# METADATA
# title: Record grades
# description: >-
#   Every record gets a grade 1-5 (GB/T 39725-2020), the highest of its resource type's base grade,
#   its sensitive codes, its security labels and tags, and its patients' flags. Code systems and
#   codes are compared in canonical form, every alias of a system being data.
# custom:
#   clauses: [I.4]
package emr.grading

import rego.v1

cfg := data.emr.config.classification

# (One lookup, no builtin call: a builtin costs regorus ~2 µs. g == g is the test every lookup gets
# before its value is used: see "Writing Rego that regorus decides like OPA" in the README.)
base(t) := g if {
	g := cfg.type_grades[t]
	g == g
} else := cfg.default_grade

# I.4: a coding's system is compared in canonical form (code_systems_note in the data): lower case,
# no blanks or "/" at either end, then one lookup in the alias map (every alias of ICD-10, LOINC,
# SNOMED CT and the label systems is data). "?" = a system not listed (grades nothing), "" = none.
# Called per searched token (emr.sidechannel); a response's systems go through system_names.
alias_of(system) := object.get(cfg.code_systems, s, "?") if {
	is_string(system)
	s := trim(lower(system), " /")
	s != ""
} else := "" if {
	is_string(system)
} else := "?"

# The grade a code gives a record in the system with the alias (0: none), the code put in canonical
# form: upper case, no blanks, no dots (ICD-10 "b20.1" = "B20.1" = "B201"). "" (no system): the
# highest it has in any listed system.
code_grade(alias, code) := g if {
	alias != ""
	is_string(code)
	g := listed_grade(alias, replace(upper(trim_space(code)), ".", ""))
} else := g if {
	is_string(code)
	g := systemless_grade(replace(upper(trim_space(code)), ".", ""))
} else := 0

# The code tables in lookup form, derived from the data once per query (and only when a code is
# graded): the sensitive codes of each listed system, split by how they match, and for the
# hierarchical systems the lengths of their listed prefixes (ICD-10: 1 and 3, "F" and "F10"), so
# that a code costs one lookup per length, not one per character.
exact_tables := {a: t |
	exact := cfg.exact_match_systems
	some a, t in cfg.sensitive_codes
	a in exact
}

prefix_tables := {a: t |
	exact := cfg.exact_match_systems
	some a, t in cfg.sensitive_codes
	not a in exact
}

prefix_lengths := {a: {n | some c, _ in t; n := count(c); n > 0} | some a, t in prefix_tables}

# The grade a canonical code has in one listed system (0: none). ICD-10 codes are hierarchical: every
# listed prefix is looked up ("F102": F and F10), the highest grade wins. LOINC and SNOMED codes are
# not (exact_match_systems): one lookup. (Every lookup is tested before its value is used: see
# "Writing Rego that regorus decides like OPA" in opa_policies/README.md.)
listed_grade(alias, code) := object.get(table, code, {"grade": 0}).grade if {
	table := exact_tables[alias]
	is_object(table)
} else := max(array.concat([0], [g |
	table := prefix_tables[alias] # bound once: a lookup through a rule in the loop costs more in regorus
	is_object(table)
	some n in prefix_lengths[alias]
	g := table[substring(code, 0, n)].grade
	g > 0
]))

# Without a system, a code could be any listed system's: the highest it has in any of them where it
# has that system's shape (systemless_shapes: "FOOD" is not chapter F of ICD-10).
systemless_grade(code) := max(array.concat([0], [g |
	shapes := cfg.systemless_shapes
	some alias, _ in cfg.sensitive_codes
	regex.match(object.get(shapes, alias, ""), code)
	g := listed_grade(alias, code)
]))

# The grade a security label or tag gives a record (0: none): its code in upper case; "" (no
# system): the highest it has in any label system.
label_grade(alias, code) := object.get(object.get(cfg.security_labels, alias, {}), upper(trim_space(code)), 0) if {
	alias != ""
	is_string(code)
} else := max({0} | {g | c := upper(trim_space(code)); some _, table in cfg.security_labels; g := table[c]; g > 0}) if {
	is_string(code)
} else := 0

# --- a whole response at once (emr.response): one call each, direct lookups inside ------------------

# Each distinct system of a response put in canonical form once: the name it is listed under, ""
# for none (no system, or only blanks and "/"). Systems not listed (most: categories, statuses,
# units, RxNorm) and non-strings are left out: their codings grade nothing. (The response decision
# is never compiled: its lookups are not tested twice, unlike the functions above.)
system_names(systems) := {s: a |
	names := object.union(cfg.code_systems, {"": ""})
	some s in systems
	is_string(s)
	a := names[trim(lower(s), " /")]
}

# Each distinct coding ({system, code}) of a response that raises its record's grade, and the grade
# (as code_grade: exact lookups for LOINC and SNOMED, the listed prefixes for ICD-10, every system
# for a code without one), given the names of its systems.
coding_grades(codings, names) := object.union(object.union(whole, by_prefix), systemless) if {
	exact := exact_tables
	whole := {c: g |
		some c in codings
		table := exact[names[c.system]]
		is_string(c.code)
		g := table[replace(upper(trim_space(c.code)), ".", "")].grade
		g > 0
	}
	prefix := prefix_tables
	lengths := prefix_lengths
	by_prefix := {c: g |
		some c in codings
		name := names[c.system]
		table := prefix[name]
		is_string(c.code)
		code := replace(upper(trim_space(c.code)), ".", "")
		g := max(array.concat([0], [x | some n in lengths[name]; x := table[substring(code, 0, n)].grade; x > 0]))
		g > 0
	}
	systemless := {c: g |
		some c in codings
		names[c.system] == ""
		g := code_grade("", c.code)
		g > 0
	}
}

# Each distinct security label or tag of a response that raises its record's grade, and the grade
# (as label_grade), given the names of its systems.
label_grades(labels, names) := object.union(listed, systemless) if {
	tables := cfg.security_labels
	listed := {l: g |
		some l in labels
		table := tables[names[l.system]]
		is_string(l.code)
		g := table[upper(trim_space(l.code))]
		g > 0
	}
	systemless := {l: g |
		some l in labels
		names[l.system] == ""
		g := label_grade("", l.code)
		g > 0
	}
}

# Per patient of the input, once per query: the grade its flags impose.
flag_grade[p] := g if {
	some p, ctx in data.emr.lib.patients
	is_array(ctx.flags)
	count(ctx.flags) > 0
	table := cfg.patient_flags
	g := max({x | some f in ctx.flags; x := table[f]; is_number(x)})
}

flag_grades(ps) := [g | some p in ps; g := flag_grade[p]; is_number(g)]

# The least grade anything a request target reaches can have (known before the server answers):
# the base grade of the type read or written, and the patients' flags.
floor(t) := max(array.concat(array.concat([1], type_floor(t)), flag_grades(t.patients)))

type_floor(t) := [base(t.type)] if {
	t.type != ""
	t.kind in {"read", "write", "delete", "operation"}
} else := []
