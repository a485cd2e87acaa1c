"""Purpose of use (I.2): the purpose the operator claims, for opa_policies/emr/purpose to judge."""

from plugins.purpose.hook import PLUGIN

__all__ = ["PLUGIN"]
