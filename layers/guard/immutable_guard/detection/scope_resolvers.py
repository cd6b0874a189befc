"""How a resource id a finding names leads to the instances it reaches, for the paths beyond groups,
interfaces, ACLs and profile associations (a route table reaches the instances of its subnets, a volume
the instance it is attached to, a role the instances whose profile carries it)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from immutable_guard.clients import Clients


@dataclass(frozen=True)
class Resolver:
    """Finds the instances behind the resource ids that `applies_to`.

    `find_instances` receives the lazy client bundle and the matching ids, returns instance ids, and
    raises `ScopeResolutionFailed` (naming the resource) when AWS refuses or fails a read; an id that no
    longer exists is simply no instance.
    """

    name: str
    applies_to: Callable[[str], bool]
    find_instances: Callable[[Clients, list[str]], Iterable[str]]
