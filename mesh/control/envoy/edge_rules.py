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


class EdgeConfigError(ValueError):
    """mesh.yaml's edge section does not fit the contracts."""


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


def resolve_rules(topology: Topology, api: Api) -> EdgeRules:
    """The public and scoped method paths; an unknown method name is an error at its line."""
    auth = topology.edge.auth
    exposed = {service: api.public(service) for service in topology.edge.expose}
    by_name = {
        f"{service}.{m.path.rsplit('/', 1)[1]}": m.path
        for service, methods in exposed.items()
        for m in methods
    }
    source = topology.source or "mesh.yaml"

    def path_of(name: str) -> str:
        if name not in by_name:
            line = auth.lines.get(name)
            where = f"{source}:{line}" if line else str(source)
            raise EdgeConfigError(f"{where}: {name} is not a public method of an exposed service")
        return by_name[name]

    public = frozenset(path_of(name) for name in auth.public)
    scopes = {path_of(name): scope for name, scope in auth.scopes.items()}
    jwks = by_name.get("identity.GetJwks")
    if jwks is None or jwks not in public:
        raise EdgeConfigError(
            f"{source}: the edge verifies tokens with identity's JWKS, so identity must be "
            "exposed and identity.GetJwks public"
        )
    return EdgeRules(exposed, public, scopes)
