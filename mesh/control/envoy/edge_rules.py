"""mesh.yaml's edge section resolved against the contracts: what the edge exposes, which
methods need no token and which need a scope."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mesh.control.api import Api, Method
from mesh.control.topology import Topology

#: The gRPC services the edge companion answers for the whole public API, without a token.
REFLECTION_PREFIX = "/grpc.reflection."
HEALTH_PREFIX = "/grpc.health.v1.Health/"
HEALTH_CHECK_PATH = f"{HEALTH_PREFIX}Check"
#: The public service whose health a `Check` asks the edge for (the companion sets it):
#: the edge routes the check to that service's instances, and gives it this long.
HEALTH_OF_HEADER = "x-shop-health-of"
HEALTH_CHECK_TIMEOUT = 2.0


@dataclass(frozen=True)
class EdgeRules:
    """mesh.yaml's edge auth rules, resolved to gRPC method paths."""

    exposed: Mapping[str, tuple[Method, ...]]
    public: frozenset[str]
    scopes: Mapping[str, str]

    @property
    def grpc_services(self) -> list[str]:
        """The full names of the exposed gRPC services (`shop.catalog.v1.CatalogService`)."""
        return sorted({m.path.split("/")[1] for ms in self.exposed.values() for m in ms})

    @property
    def secured(self) -> list[str]:
        """The paths of the exposed methods that need a token."""
        return sorted(
            m.path for ms in self.exposed.values() for m in ms if m.path not in self.public
        )


def _paths(exposed: Mapping[str, tuple[Method, ...]], name: str) -> list[str]:
    """The paths of the exposed methods `name` (`catalog.GetProduct`) means: the method
    of that name in every version of the service's API (`mesh.control.api`)."""
    service, _, method = name.partition(".")
    return [m.path for m in exposed.get(service, ()) if m.name == method]


def resolve_rules(topology: Topology, api: Api) -> EdgeRules:
    """The public and scoped method paths, of names `mesh.control.conformance` found to be
    public methods of exposed services: each name's method in every API version."""
    auth = topology.edge.auth
    exposed = {service: api.public(service) for service in topology.edge.expose}
    public = frozenset(path for name in auth.public for path in _paths(exposed, name))
    scopes = {path: scope for name, scope in auth.scopes.items() for path in _paths(exposed, name)}
    return EdgeRules(exposed, public, scopes)
