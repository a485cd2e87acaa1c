"""Record sealing 封存 (I.4): hook, /admin/seals, table; opa_policies/emr/seal."""

from plugins.seal.hook import PLUGIN

__all__ = ["PLUGIN"]
