"""Policy explain (I.3 supervision of permissions): what the policy would decide, and why."""

from plugins.explain.admin import PLUGIN

__all__ = ["PLUGIN"]
