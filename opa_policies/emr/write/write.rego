# I.3 健全管理制度: creating, recording and modifying records follow governed workflows: who may
# create/update/patch/delete which types is data (emr/config/roles/data.json: write, delete), writes
# are made for care or records management only (emr/config/write/data.json), deletes only by
# records officers; students, researchers and vendors do not write (a vendor only where its
# agreement names the write, II.1). Writes need the care relationship (emr.care) and a sealed
# patient's records are frozen (emr.seal) like any other use.

# METADATA
# title: Writes
# description: >-
#   Who may create, update, patch or delete which types, and for which purposes (care, records
#   management). Conditional writes and removals of security labels (except by records officers) are
#   refused, and a vendor writes only what its agreement names.
# custom:
#   clauses: [I.3, I.4, II.1]
package emr.write

import rego.v1

cfg := data.emr.config.write

role_cfg := data.emr.config.roles.roles

purpose_ok if data.emr.lib.purpose in cfg.write_purposes

permits(r, t) if {
	t.kind == "write"
	purpose_ok
	not data.emr.roles.scoped_kind[r]
	data.emr.roles.type_in(role_cfg[r].write, t.type)
}

permits(r, t) if {
	t.kind == "write"
	purpose_ok
	data.emr.roles.scoped_kind[r]
	data.emr.roles.scope_ok(r, t)
}

# A grant never adds a delete.
permits(r, t) if {
	t.kind == "delete"
	purpose_ok
	data.emr.roles.type_in(role_cfg[r].delete, t.type)
}

any_permits(t) if {
	some r in data.emr.roles.active
	permits(r, t)
}

writes contains t if {
	some t in data.emr.lib.targets
	t.kind in {"write", "delete"}
}

# I.3: records are written for care or records management, not while teaching or researching.
deny contains r if {
	count(data.emr.roles.active) > 0
	some t in writes
	not purpose_ok
	r := data.emr.lib.reason(
		"write.purpose", "I.3",
		sprintf("%s%s %s: records are written only for purposes %s, not %s", [t.where, t.interaction, t.type, data.emr.lib.joined(cfg.write_purposes), data.emr.lib.purpose]),
		sprintf("%s%s %s:仅可为 %s 目的修改病历,不可为 %s", [t.where, t.interaction, t.type, data.emr.lib.joined(cfg.write_purposes), data.emr.lib.purpose]),
	)
}

# I.3: the active roles must be allowed this write on this type (deletes: records officers only).
deny contains r if {
	count(data.emr.roles.active) > 0
	purpose_ok
	some t in writes
	not any_permits(t)
	not scoped_write(t)
	r := data.emr.lib.reason(
		"write.not-permitted", "I.3",
		sprintf("%s%s %s is not permitted for the operator's roles (deletes are made by records officers)", [t.where, t.interaction, t.type]),
		sprintf("%s操作人员的角色无权执行 %s %s(删除须由病案管理人员执行)", [t.where, t.interaction, t.type]),
	)
}

scoped_write(t) if {
	data.emr.roles.all_scoped
	t.kind == "write"
}

# II.1: a vendor writes only what its agreement names (interaction and type).
deny contains r if {
	purpose_ok
	some t in writes
	scoped_write(t)
	not any_permits(t)
	r := data.emr.lib.reason(
		"grant.out-of-scope", "II.1",
		sprintf("%s%s %s is outside the scope of your vendor agreement: the agreement must name the write and the type", [t.where, t.interaction, t.type]),
		sprintf("%s%s %s 超出外部服务商授权协议的范围:协议须同时列明该写操作和资源类型", [t.where, t.interaction, t.type]),
	)
}

# I.3 / I.4: a conditional write (update/patch/delete by search, create with If-None-Exist) touches
# records the gateway cannot check before they change, and its answer tells whether a hidden record
# matches. Refused: read the record, then write it by id.
deny contains r if {
	not cfg.conditional_writes_allowed
	some t in data.emr.lib.targets
	t.conditional
	r := data.emr.lib.reason(
		"write.conditional", "I.3",
		sprintf("%sconditional writes are not accepted through the gateway: read the record, then write it by id", [t.where]),
		sprintf("%s不接受条件写入:请先读取记录,再按 id 写入", [t.where]),
	)
}

# I.3 / I.4: lowering a record's sensitivity (removing a confidentiality or sensitivity label) changes
# who may see it; only the listed roles (records officers) may. The gateway lists the labels a write
# would remove in input.target.labels_removed, having compared the new version with the current one.
deny contains r if {
	removed := object.get(input.target, "labels_removed", [])
	count(removed) > 0
	not label_removal_allowed

	# Which labels goes in detail: they are the current version's, which the requester did not send.
	r := data.emr.lib.reason_with_detail(
		"write.label-removed", "I.3",
		sprintf("this write would remove security labels the record carries: only %s may lower a record's sensitivity", [data.emr.lib.joined(cfg.label_removal_roles)]),
		sprintf("该写入将移除记录现有的安全标签:仅 %s 可降低病历敏感级别", [data.emr.lib.joined(cfg.label_removal_roles)]),
		{"labels_removed": removed},
	)
}

label_removal_allowed if {
	some role in data.emr.roles.active
	role in cfg.label_removal_roles
}
