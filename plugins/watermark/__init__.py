"""Digital watermarks (II.2): marks on every disclosure (hook, codec) and their tracing (decode)."""

from plugins.watermark.hook import PLUGIN

__all__ = ["PLUGIN"]
