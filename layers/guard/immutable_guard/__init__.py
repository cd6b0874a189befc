"""Immutable Guard: Detect. Nuke. Replace. for immutable EC2 servers, and safe Lambda canaries."""

__version__ = "0.1.0"
