"""Alerts to senior management (II.3): /admin/alerts."""

from plugins.alerts.hook import PLUGIN

__all__ = ["PLUGIN"]
