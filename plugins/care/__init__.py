"""The care relationship (I.4): departments, care team and flags of each patient; opa_policies/emr/care."""

from plugins.care.hook import PLUGIN

__all__ = ["PLUGIN"]
