"""Remediation steps of the state machine: contain, evidence, replace, nuke, and release (the undo)."""
