"""The service map: the mesh's topology as a graph the console draws.

Nodes are the edge, each service (with its replicas) and NATS. Links are who calls whom
(the edge calls what it exposes; a service calls what `calls:` lists) and the events:
from each producer to NATS, and from NATS to each consumer, with the events' names. Each RPC
link is measured where the call leaves: by the caller's Envoy (the edge's, or each of
the caller's sidecars), in its cluster named after the callee (`envoy.clusters`).

Nodes sit in columns by the longest path of calls that reaches them from the edge, so
every call goes left to right; NATS sits in a row of its own under them all, in the
middle, the events going down to it and up from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mesh.control.plan import MeshPlan
from mesh.control.routing import cluster_name
from mesh.control.topology import Topology

EDGE = "edge"
NATS = "nats"


@dataclass(frozen=True)
class Node:
    id: str
    kind: str
    """`edge`, `service` or `nats`."""
    column: int
    row: int
    instances: tuple[str, ...] = ()


@dataclass(frozen=True)
class Link:
    id: str
    source: str
    target: str
    kind: str
    """`rpc` or `event`."""
    events: tuple[str, ...] = ()
    """For an event link, the events (`<producer>.<event>`) it carries."""
    measured_at: tuple[str, ...] = field(default=(), compare=False)
    """For an RPC link, the admin sockets of the Envoys that send its calls."""
    clusters: tuple[str, ...] = field(default=(), compare=False)
    """For an RPC link, the senders' clusters of its callee (one per version)."""


@dataclass(frozen=True)
class ServiceMap:
    nodes: tuple[Node, ...]
    links: tuple[Link, ...]

    def link(self, link_id: str) -> Link:
        for link in self.links:
            if link.id == link_id:
                return link
        raise KeyError(link_id)


def service_map(topology: Topology, plan: MeshPlan) -> ServiceMap:
    calls = _calls(topology)
    columns = _columns(calls, topology)
    nodes = _nodes(columns, plan)
    links = [_rpc_link(source, target, topology, plan) for source, target in calls]
    links += _event_links(topology)
    return ServiceMap(tuple(nodes), tuple(links))


def _calls(topology: Topology) -> list[tuple[str, str]]:
    """(caller, callee) for every call the mesh allows, the edge's first."""
    calls = [(EDGE, name) for name in topology.edge.expose] if topology.edge.expose else []
    for name in topology.start_order():
        calls += [(name, dependency) for dependency in sorted(topology.services[name].calls)]
    return calls


def _columns(calls: list[tuple[str, str]], topology: Topology) -> dict[str, int]:
    """Each node's column: the longest chain of calls from the edge (or from nothing)
    that reaches it, NATS after every service."""
    first = 1 if topology.edge.expose else 0
    column = dict.fromkeys(topology.services, first)
    if topology.edge.expose:
        column[EDGE] = 0
    for _ in range(len(column)):  # the calls form no cycle: this many rounds settle
        for caller, callee in calls:
            column[callee] = max(column[callee], column[caller] + 1)
    column[NATS] = max(column.values()) // 2 + max(column.values()) % 2
    return column


def _nodes(columns: Mapping[str, int], plan: MeshPlan) -> list[Node]:
    rows: dict[int, int] = {}
    nodes = []
    for name in sorted((n for n in columns if n != NATS), key=lambda n: (columns[n], n)):
        row = rows.get(columns[name], 0)
        rows[columns[name]] = row + 1
        kind = EDGE if name == EDGE else "service"
        instances = tuple(i.name for i in plan.of(name)) if kind == "service" else ()
        nodes.append(Node(name, kind, columns[name], row, instances))
    nodes.append(Node(NATS, NATS, columns[NATS], max(rows.values(), default=0)))
    return nodes


def _rpc_link(source: str, target: str, topology: Topology, plan: MeshPlan) -> Link:
    senders: tuple[str, ...] = tuple(i.admin_socket for i in plan.of(source))
    if source == EDGE and plan.edge is not None:
        senders = (plan.edge.admin_socket,)
    clusters = tuple(cluster_name(target, v.name) for v in topology.services[target].releases)
    return Link(
        f"{source}->{target}", source, target, "rpc", measured_at=senders, clusters=clusters
    )


def _event_links(topology: Topology) -> list[Link]:
    """Producer -> NATS with the events someone consumes, NATS -> each consumer with
    the events it consumes (`<producer>.<event>`)."""
    consumed = {name: topology.services[name].consumes for name in sorted(topology.services)}
    published: dict[str, list[str]] = {}
    for events in consumed.values():
        for event in events:
            published.setdefault(event.split(".", 1)[0], []).append(event)
    links = [
        Link(f"{producer}->{NATS}", producer, NATS, "event", events=tuple(sorted(set(events))))
        for producer, events in sorted(published.items())
    ]
    links += [
        Link(f"{NATS}->{name}", NATS, name, "event", events=tuple(events))
        for name, events in consumed.items()
        if events
    ]
    return links
