"""The console's service map, drawn from mesh.yaml and the plan."""

from __future__ import annotations

import itertools
from pathlib import Path

from mesh.control.console.graph import EDGE, NATS, ServiceMap, service_map
from mesh.control.plan import make_plan
from mesh.control.topology import Topology, load, parse

ROOT = Path(__file__).resolve().parents[2]

SMALL = """
services:
  catalog:
    replicas: 2
    calls:
      inventory: {methods: all}
  inventory:
    consumes: [orders.order_placed]
  orders:
    calls:
      catalog: {methods: all}
edge:
  expose: [catalog, orders]
"""


def _map(topology: Topology, tmp_path: Path) -> ServiceMap:
    ports = itertools.count(20000)
    return service_map(topology, make_plan(topology, tmp_path / "run", lambda: next(ports)))


def test_every_service_with_its_replicas_the_edge_and_nats_are_nodes(tmp_path: Path) -> None:
    graph = _map(parse(SMALL), tmp_path)
    nodes = {node.id: node for node in graph.nodes}
    assert set(nodes) == {EDGE, NATS, "catalog", "inventory", "orders"}
    assert nodes["catalog"].instances == ("catalog-0", "catalog-1")
    assert nodes[EDGE].kind == "edge"
    assert nodes[NATS].kind == "nats"


def test_every_call_goes_to_a_later_column_and_nats_is_under_them_all(tmp_path: Path) -> None:
    graph = _map(parse(SMALL), tmp_path)
    column = {node.id: node.column for node in graph.nodes}
    assert column == {EDGE: 0, "orders": 1, "catalog": 2, "inventory": 3, NATS: 2}
    row = {node.id: node.row for node in graph.nodes}
    assert row[NATS] > max(r for name, r in row.items() if name != NATS)
    for link in graph.links:
        if link.kind == "rpc":
            assert column[link.target] > column[link.source], link.id
    places = {(node.column, node.row) for node in graph.nodes}
    assert len(places) == len(graph.nodes)  # no two nodes on one spot


def test_calls_are_measured_where_they_leave(tmp_path: Path) -> None:
    topology = parse(SMALL)
    ports = itertools.count(20000)
    plan = make_plan(topology, tmp_path / "run", lambda: next(ports))
    graph = service_map(topology, plan)
    rpc = {link.id: link for link in graph.links if link.kind == "rpc"}
    assert set(rpc) == {"edge->catalog", "edge->orders", "orders->catalog", "catalog->inventory"}
    assert plan.edge is not None
    assert rpc["edge->catalog"].measured_at == (plan.edge.admin_socket,)
    assert rpc["catalog->inventory"].measured_at == tuple(
        i.admin_socket for i in plan.of("catalog")
    )


def test_events_run_from_their_producer_to_nats_and_on_to_each_consumer(tmp_path: Path) -> None:
    graph = _map(parse(SMALL), tmp_path)
    events = {link.id: link.events for link in graph.links if link.kind == "event"}
    assert events == {
        "orders->nats": ("orders.order_placed",),
        "nats->inventory": ("orders.order_placed",),
    }


def test_the_shops_map_has_a_node_for_every_service(tmp_path: Path) -> None:
    topology = load(ROOT / "mesh.yaml")
    graph = _map(topology, tmp_path)
    assert {node.id for node in graph.nodes} == {*topology.services, EDGE, NATS}
    consumers = {link.target for link in graph.links if link.source == NATS}
    assert consumers == {name for name, s in topology.services.items() if s.consumes}
