"""Break-the-glass (I.4, II.3): an emergency reason, audited and alerted; opa_policies/emr/care decides."""

from plugins.break_glass.hook import PLUGIN

__all__ = ["PLUGIN"]
