"""The embedded local AWS: template.yaml deployed onto moto's server on this machine, with our Lambda
handlers run in-process, events routed by the template's rules, and CloudTrail / Config emitted."""

from immutable_guard.local.deploy import Deployment, SkippedResource
from immutable_guard.local.router import EventRouter
from immutable_guard.local.runtime import LocalAws, LocalSession

__all__ = ["Deployment", "EventRouter", "LocalAws", "LocalSession", "SkippedResource"]
