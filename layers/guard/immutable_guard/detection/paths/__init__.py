"""The mutation paths beyond the first ones, one module per room: each declares the CloudTrail records
it handles (`HANDLERS`) and how the resources its findings name lead to instances (`RESOLVERS`)."""

from __future__ import annotations

from typing import Final

from immutable_guard.detection.paths import disks, golden_image, network, permissions, shell, tags, wiring
from immutable_guard.detection.readers import Handler
from immutable_guard.detection.scope_resolvers import Resolver

_MODULES: Final = (network, disks, shell, permissions, golden_image, wiring, tags)

HANDLERS: Final[dict[tuple[str, str], Handler]] = {
    key: handler for module in _MODULES for key, handler in module.HANDLERS.items()
}
RESOLVERS: Final[tuple[Resolver, ...]] = tuple(r for module in _MODULES for r in module.RESOLVERS)
