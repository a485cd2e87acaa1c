"""Write governance (I.3, I.4): a write judged by what it changes; opa_policies/emr/write."""

from plugins.write_guard.hook import PLUGIN

__all__ = ["PLUGIN"]
