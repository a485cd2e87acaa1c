"""Time-bound grants (II.1): rotations, vendor agreements, exports — hook, /admin/grants, table; opa_policies/emr/grants."""

from plugins.grants.hook import PLUGIN

__all__ = ["PLUGIN"]
