"""mesh.yaml's edge section resolved against the contracts: what the edge exposes, which
methods need no token, which need a scope, and which reads it caches."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from mesh.control.api import Api, Method
from mesh.control.topology import Topology

#: The method whose answer is the edge's deny list of API keys (`edge.api_keys`).
REVOCATIONS_METHOD = "identity.ListRevokedApiKeys"
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
    revocations: Method | None = None
    """The method the edge's deny list of API keys comes from; None: no API keys."""
    cached: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    """The max-age of each read the edge caches (`edge.cache`), by path: the methods that
    `edge.cache` names, in each API version that reads them with an HTTP GET."""

    @property
    def cached_reads(self) -> list[Method]:
        """The exposed methods the edge caches, by path."""
        found = [m for ms in self.exposed.values() for m in ms if m.path in self.cached]
        return sorted(found, key=lambda m: m.path)

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


def _cached(topology: Topology, exposed: Mapping[str, tuple[Method, ...]]) -> Mapping[str, float]:
    """The max-age of each path of a method `edge.cache` names that has an HTTP GET binding."""
    gets = {m.path for ms in exposed.values() for m in ms if m.http_gets}
    return MappingProxyType({
        path: max_age
        for name, max_age in topology.edge.cache.items()
        for path in _paths(exposed, name)
        if path in gets
    })  # fmt: skip


def resolve_rules(topology: Topology, api: Api) -> EdgeRules:
    """The public, scoped and cached method paths, of names `mesh.control.conformance`
    found to be public methods of exposed services: each name's method in every API version."""
    auth = topology.edge.auth
    exposed = {service: api.public(service) for service in topology.edge.expose}
    public = frozenset(path for name in auth.public for path in _paths(exposed, name))
    scopes = {path: scope for name, scope in auth.scopes.items() for path in _paths(exposed, name)}
    revocations = None
    if topology.edge.api_keys.plans:
        service, _, method = REVOCATIONS_METHOD.partition(".")
        revocations = api.named(service, [method])[0]
    return EdgeRules(exposed, public, scopes, revocations, cached=_cached(topology, exposed))
