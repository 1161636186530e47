"""mesh.yaml against the real contracts: each name they lack is an error at its line."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from mesh.control import conformance
from mesh.control.api import Api
from mesh.control.contracts import DESCRIPTOR_SET, Workspace
from mesh.control.topology import load, parse
from shop.events.v1 import events_pb2
from tests.support.topology import REPOSITORY_MESH_YAML

#: The edge's least: identity exposed with its keys public, as every edge needs.
EDGE = """\
services:
  catalog: {}
  identity: {}
  orders:
    calls:
      catalog: {methods: [BatchGetProducts]}
edge:
  expose: [catalog, identity]
  auth:
    public:
      - identity.GetJwks
"""


@pytest.fixture(scope="module")
def api() -> Api:
    root = Workspace.find(Path(__file__).parent).root
    return Api.from_descriptor_set(root / DESCRIPTOR_SET)


def exposing(service: str) -> str:
    """EDGE with one more service, exposed at the edge."""
    return EDGE.replace("[catalog, identity]", f"[catalog, identity, {service}]").replace(
        "  identity: {}\n", f"  identity: {{}}\n  {service}: {{}}\n"
    )


def problems(api: Api, text: str) -> list[str]:
    return [str(error) for error in conformance.problems(parse(dedent(text)), api)]


def test_the_repository_mesh_yaml_fits_the_contracts(api: Api) -> None:
    assert conformance.problems(load(REPOSITORY_MESH_YAML), api) == []


def test_the_events_are_the_payloads_of_the_envelope(api: Api) -> None:
    payloads = events_pb2.EventEnvelope.DESCRIPTOR.oneofs_by_name["payload"].fields
    assert api.events == {field.name for field in payloads}
    assert "order_placed" in api.events


def test_an_unknown_public_method_is_reported_at_its_line_with_the_likely_one(api: Api) -> None:
    assert problems(api, EDGE + "      - catalog.GetProdcut\n") == [
        "mesh.yaml:12: edge.auth.public entry catalog.GetProdcut: catalog has no public "
        "method 'GetProdcut' (its public methods: BatchGetProducts, CreateProduct, "
        "DeleteProduct, GetProduct, ListProducts, UpdateProduct); "
        "did you mean 'catalog.GetProduct'?"
    ]


def test_an_unknown_scoped_method_is_reported_at_its_line(api: Api) -> None:
    found = problems(api, EDGE + "    scopes:\n      catalog.CreateProducts: catalog:write\n")
    assert len(found) == 1
    assert found[0].startswith("mesh.yaml:13: edge.auth.scopes key catalog.CreateProducts: ")
    assert found[0].endswith("did you mean 'catalog.CreateProduct'?")


def test_an_internal_method_cannot_be_public(api: Api) -> None:
    text = exposing("inventory")
    assert problems(api, text + "      - inventory.ReserveStock\n") == [
        "mesh.yaml:13: edge.auth.public entry inventory.ReserveStock: inventory.ReserveStock "
        "is INTERNAL in the contracts, so the edge never routes it"
    ]


def test_an_edge_needs_identitys_keys_public(api: Api) -> None:
    text = EDGE.replace("      - identity.GetJwks\n", "      - identity.Login\n")
    assert problems(api, text) == [
        "mesh.yaml: the edge verifies tokens with identity's JWKS, so identity must be "
        "exposed and identity.GetJwks in edge.auth.public"
    ]


def test_an_exposed_service_needs_a_contract(api: Api) -> None:
    text = exposing("warehouse")
    assert problems(api, text) == [
        "mesh.yaml: edge.expose names warehouse, which has no RPCs in the contracts "
        "(protos/shop/warehouse/v1/)"
    ]


def test_an_unknown_method_of_a_call_is_reported_at_its_line(api: Api) -> None:
    text = EDGE.replace("[BatchGetProducts]", "[BatchGetProducts, GetProducts]")
    assert problems(api, text) == [
        "mesh.yaml:6: services.orders.calls.catalog.methods: catalog has no method "
        "'GetProducts' (its methods: BatchGetProducts, CreateProduct, DeleteProduct, "
        "GetProduct, ListProducts, UpdateProduct); did you mean 'GetProduct'?"
    ]


def test_a_method_policy_of_an_unknown_method_is_reported_at_its_line(api: Api) -> None:
    policy = "  identity:\n    methods:\n      Logon: {cost: expensive}\n"
    [found] = problems(api, EDGE.replace("  identity: {}\n", policy))
    assert found.startswith("mesh.yaml:5: services.identity.methods: identity has no method")
    assert "'Logon'" in found
    assert found.endswith("did you mean 'Login'?")


def test_an_unknown_consumed_event_is_reported_at_its_line(api: Api) -> None:
    text = EDGE.replace(
        "  catalog: {}\n", "  catalog:\n    consumes:\n      - orders.order_place\n"
    )
    assert problems(api, text) == [
        "mesh.yaml:4: services.catalog.consumes entry 'orders.order_place': the contracts "
        "have no event 'order_place' (the payloads of shop.events.v1.EventEnvelope); "
        "did you mean 'orders.order_placed'?"
    ]


def test_every_problem_is_reported_in_the_files_order(api: Api) -> None:
    text = EDGE.replace("[BatchGetProducts]", "[GetProducts]").replace("GetJwks", "GetJwk")
    text += "    scopes:\n      catalog.CreateProducts: catalog:write\n"
    found = conformance.problems(parse(text), api)
    # The file's own first: the edge without identity's keys has no line of its own.
    assert [error.line for error in found] == [None, 6, 11, 13]


def test_problems_are_told_together_one_line_each() -> None:
    assert conformance.told_together(["a.yaml:1: x"], "nothing started") == "a.yaml:1: x"
    assert conformance.told_together(["a.yaml:1: x", "a.yaml:2: y"], "nothing started") == (
        "2 problems, nothing started:\n  a.yaml:1: x\n  a.yaml:2: y"
    )
