"""mesh.yaml held against the contracts: every method and event it names is there.

The topology's reader checks mesh.yaml on its own: its shape, its services, the rules
across its sections. What it names of the contracts (the methods of `edge.auth`, of a
`calls:` entry's `methods:` and of a service's `methods:`, the events of `consumes:`)
only the descriptor set can confirm, as it alone knows which public methods `edge.cache`
may cache (those with an HTTP GET binding). `problems` finds every such mistake at once, each
at its line with the closest name the contracts have; `meshctl up` (`mesh.control.preflight`)
and `meshctl render` refuse a topology with any, so the renderers (`mesh.control.envoy`)
take the names they are given as found. A method's name means the method of that name
in every version of its service's API that has it (`mesh.control.api`), so a name is
found if any version has it, and each is listed once.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence

from mesh.control.api import Api
from mesh.control.envoy.edge_rules import REVOCATIONS_METHOD
from mesh.control.topology import Topology, TopologyError, suggest

#: The method that serves the keys the edge checks every token against.
JWKS_METHOD = "identity.GetJwks"


def problems(topology: Topology, api: Api) -> list[TopologyError]:
    """Every name `topology` takes from the contracts that they lack, in the file's order."""
    found = [
        *_exposed_without_contract(topology, api),
        *_edge_auth(topology, api),
        *_edge_cache(topology, api),
        *_token_keys(topology),
        *_deny_list(topology, api),
        *_granted_methods(topology, api),
        *_method_policies(topology, api),
        *_consumed_events(topology, api),
    ]
    return sorted(found, key=lambda error: error.line or 0)


def told_together(problems: Sequence[object], outcome: str) -> str:
    """Problems as one message, one line each: the one alone, or how many and `outcome`
    (`nothing started`) before them."""
    lines = [str(problem) for problem in problems]
    if len(lines) == 1:
        return lines[0]
    return f"{len(lines)} problems, {outcome}:\n  " + "\n  ".join(lines)


def _error(topology: Topology, line: int | None, detail: str) -> TopologyError:
    return TopologyError(detail, str(topology.source or "mesh.yaml"), line)


def _no_method(service: str, method: str, names: Collection[str]) -> str:
    known = ", ".join(sorted(names)) or "none in the contracts"
    return f"{service} has no method {method!r} (its methods: {known}){suggest(method, names)}"


def _exposed_without_contract(topology: Topology, api: Api) -> Iterator[TopologyError]:
    """An exposed service needs its RPCs in the contracts: the edge transcodes and
    documents them from there."""
    for service in topology.edge.expose:
        if not api.of(service):
            yield _error(
                topology,
                None,
                f"edge.expose names {service}, which has no RPCs in the contracts "
                f"(protos/shop/{service}/v1/)",
            )


def _edge_auth(topology: Topology, api: Api) -> Iterator[TopologyError]:
    """Each method of `edge.auth.public` and `edge.auth.scopes`: a public one (not
    INTERNAL) of its service."""
    auth = topology.edge.auth
    named = [("edge.auth.public entry", name) for name in auth.public]
    named += [("edge.auth.scopes key", name) for name in auth.scopes]
    for where, name in named:
        service, _, method = name.partition(".")
        public = api.names(service, public=True)
        if method in public:
            continue
        if method in api.names(service):
            detail = f"{name} is INTERNAL in the contracts, so the edge never routes it"
        else:
            choices = [f"{service}.{m}" for m in public]
            known = ", ".join(public) or "none"
            detail = (
                f"{service} has no public method {method!r} (its public methods: {known})"
                + suggest(name, choices)
            )
        yield _error(topology, auth.lines.get(name), f"{where} {name}: {detail}")


def _edge_cache(topology: Topology, api: Api) -> Iterator[TopologyError]:
    """Each method of `edge.cache`: a public one at the edge (an answer that needs a token
    is the token holder's, never shared), read with an HTTP GET (the edge caches GETs)."""
    edge = topology.edge
    for name in edge.cache:
        where = f"edge.cache {name}"
        service, _, method = name.partition(".")
        if name not in edge.auth.public:
            typo = method not in api.names(service)
            detail = (
                "only a public method's answer may be shared: add it to edge.auth.public "
                f"or drop it here{suggest(name, edge.auth.public) if typo else ''}"
            )
        elif method not in api.names(service, public=True):
            continue  # `_edge_auth` says what is wrong with the name
        elif not any(m.http_gets for m in api.named(service, [method])):
            detail = "the contracts bind it to no HTTP GET, and the edge caches GET reads only"
        else:
            continue
        yield _error(topology, edge.cache_lines.get(name), f"{where}: {detail}")


def _token_keys(topology: Topology) -> Iterator[TopologyError]:
    """The edge fetches the keys it checks tokens with from identity, without a token."""
    if topology.edge.expose and JWKS_METHOD not in topology.edge.auth.public:
        yield _error(
            topology,
            None,
            "the edge verifies tokens with identity's JWKS, so identity must be exposed and "
            f"{JWKS_METHOD} in edge.auth.public",
        )


def _deny_list(topology: Topology, api: Api) -> Iterator[TopologyError]:
    """API keys are checked against identity's deny list, which the edge follows."""
    service, _, method = REVOCATIONS_METHOD.partition(".")
    if topology.edge.api_keys.plans and method not in api.names(service):
        yield _error(
            topology,
            None,
            f"edge.api_keys: the edge follows the API keys identity revoked through "
            f"{REVOCATIONS_METHOD}, which the contracts lack",
        )


def _granted_methods(topology: Topology, api: Api) -> Iterator[TopologyError]:
    """Each method a `calls:` entry names: one of the callee's."""
    for caller, service in topology.services.items():
        for callee, grant in service.grants.items():
            if isinstance(grant, str):  # a group: `all` or `public`
                continue
            names = api.names(callee)
            for method in grant:
                if method not in names:
                    yield _error(
                        topology,
                        service.lines.get(f"{callee}.{method}"),
                        f"services.{caller}.calls.{callee}.methods: "
                        + _no_method(callee, method, names),
                    )


def _method_policies(topology: Topology, api: Api) -> Iterator[TopologyError]:
    """Each method a service's `methods:` gives a cost or timeout: one of its own."""
    for name, service in topology.services.items():
        names = api.names(name)
        for method, policy in service.methods.items():
            if method not in names:
                detail = _no_method(name, method, names)
                yield _error(topology, policy.line, f"services.{name}.methods: {detail}")


def _consumed_events(topology: Topology, api: Api) -> Iterator[TopologyError]:
    """Each event of `consumes:`: one of the contracts' (a payload of `EventEnvelope`)."""
    for name, service in topology.services.items():
        for entry in service.consumes:
            producer, _, event = entry.partition(".")
            if event in api.events:
                continue
            choices = [f"{producer}.{known}" for known in api.events]
            yield _error(
                topology,
                service.lines.get(entry),
                f"services.{name}.consumes entry {entry!r}: the contracts have no event "
                f"{event!r} (the payloads of shop.events.v1.EventEnvelope)"
                + suggest(entry, choices),
            )
