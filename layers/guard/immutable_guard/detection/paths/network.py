"""(to be written)"""

from __future__ import annotations

from typing import Final

from immutable_guard.detection.readers import Handler
from immutable_guard.detection.scope_resolvers import Resolver

HANDLERS: Final[dict[tuple[str, str], Handler]] = {}
"""(eventSource, eventName) -> handler, for the CloudTrail records of this path."""

RESOLVERS: Final[tuple[Resolver, ...]] = ()
"""How the resource ids this path's findings name lead to instances."""
