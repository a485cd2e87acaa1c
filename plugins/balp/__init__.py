"""IHE Basic Audit Log Patterns (II.2, III): AuditEvents, export, forwarding."""

from plugins.balp.hook import PLUGIN

__all__ = ["PLUGIN"]
