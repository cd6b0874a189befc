"""Canary deployments for Lambda aliases: the alias's traffic moves to a new version in small, checked
steps and moves back on its own when a step is not confirmed healthy."""
