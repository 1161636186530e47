"""The consumer contracts' library (mesh.tools.consumer_contracts): reading the files, and
telling a provider that gives a consumer less than its contract declares, on plain
messages. The services' own contracts are verified in tests/contracts."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.type import money_pb2

from mesh.control.topology import load, parse
from mesh.tools.consumer_contracts import (
    Contract,
    ContractError,
    given_to,
    load_contract,
    load_contracts,
    only,
    set_paths,
    topology_gaps,
    undeclared_paths,
    unset_paths,
    verify_events,
    verify_response,
)
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.events.v1 import events_pb2

ROOT = Path(__file__).resolve().parents[2]

PRICES = """\
rpcs:
  - method: shop.catalog.v1.CatalogService.BatchGetProducts
    given: the products exist
    request: [ids]
    response: [products.id, products.name, products.price.units, products.price.nanos]
    may_be_empty: [products.price.nanos]
"""
PLACEMENTS = """\
events:
  orders.order_placed:
    envelope: [order_id]
    payload: [lines.product_id, lines.quantity, weight_grams]
    may_be_empty: [weight_grams]
  orders.order_confirmed:
    envelope: [order_id]
"""


def write(root: Path, consumer: str, provider: str, text: str) -> Path:
    path = root / "services" / consumer / "contracts" / f"{provider}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def contract(root: Path, consumer: str, provider: str, text: str) -> Contract:
    return load_contract(write(root, consumer, provider, text))


def load_error(tmp_path: Path, provider: str, text: str) -> str:
    with pytest.raises(ContractError) as error:
        contract(tmp_path, "orders", provider, text)
    return str(error.value)


def product(name: str = "Tea", units: int = 4, nanos: int = 500_000_000) -> catalog_pb.Product:
    price = money_pb2.Money(currency_code="EUR", units=units, nanos=nanos)
    return catalog_pb.Product(id=f"id-{name}", name=name, price=price)


def placed(*quantities: int) -> events_pb2.EventEnvelope:
    lines = [events_pb2.OrderLine(product_id=f"p{q}", quantity=q) for q in quantities]
    payload = events_pb2.OrderPlaced(order_id="o1", customer_id="alice", lines=lines)
    return events_pb2.EventEnvelope(
        event_id="e1", order_id="o1", producer="orders", order_placed=payload
    )


def test_the_services_contracts_load_and_agree_with_the_topology() -> None:
    contracts = load_contracts(ROOT)
    assert {(c.consumer, c.provider) for c in contracts} >= {
        ("orders", "catalog"), ("catalog", "inventory"), ("payments", "processor"),
        ("inventory", "orders"), ("notifications", "orders"),
    }  # fmt: skip
    assert topology_gaps(load(ROOT / "mesh.yaml"), contracts) == []


def test_a_contract_names_its_consumer_and_provider_by_where_it_is_kept(tmp_path: Path) -> None:
    prices = contract(tmp_path, "orders", "catalog", PRICES)
    assert (prices.consumer, prices.provider) == ("orders", "catalog")
    [interaction] = prices.interactions
    assert interaction.name == "BatchGetProducts, given the products exist"
    assert interaction.grpc_path == "/shop.catalog.v1.CatalogService/BatchGetProducts"
    assert interaction.response_type is catalog_pb.BatchGetProductsResponse


def test_an_unknown_field_is_an_error_naming_the_file_and_the_path(tmp_path: Path) -> None:
    message = load_error(tmp_path, "catalog", PRICES.replace("products.name", "products.colour"))
    path = tmp_path / "services/orders/contracts/catalog.yaml"
    assert message == (
        f"{path}: rpcs[0].response: 'products.colour': "
        "shop.catalog.v1.Product has no field 'colour'"
    )


#: A mistake in a contract file, in the file of `provider`, and what the error says.
MISTAKES = [
    ("catalog", PRICES.replace("[ids]", "[ids.value]"), "'ids.value': shop.catalog.v1"),
    ("catalog", PRICES.replace("BatchGetProducts", "GetProducts"), "no method"),
    ("inventory", PRICES, "is not one of inventory's methods"),
    ("catalog", PRICES.replace("given: the products exist", "when: now"), "unknown key 'when'"),
    ("catalog", PRICES.replace("[products.price.nanos]", "[price]"), "not a declared path"),
    ("orders", PLACEMENTS.replace("order_confirmed", "order_shipped"), "no event"),
    ("catalog", PLACEMENTS, "an event of 'orders', not of 'catalog'"),
    ("orders", PLACEMENTS.replace("[order_id]\n    pay", "[order_placed]\n    pay"), "`payload`"),
    ("orders", "rpcs: {}\n", "rpcs: expected a list"),
]


@pytest.mark.parametrize(("provider", "text", "expected"), MISTAKES)
def test_a_contract_that_cannot_be_checked_does_not_load(
    tmp_path: Path, provider: str, text: str, expected: str
) -> None:
    assert expected in load_error(tmp_path, provider, text)


def test_a_repeated_field_must_be_filled_in_every_element_and_have_one() -> None:
    response = catalog_pb.BatchGetProductsResponse(products=[product("Tea"), product("")])
    assert unset_paths(response, ["products.id", "products.name"]) == ["products.name"]
    assert unset_paths(catalog_pb.BatchGetProductsResponse(), ["products.id"]) == ["products.id"]


def test_a_zero_counts_as_unfilled_unless_it_may_be_empty() -> None:
    response = catalog_pb.BatchGetProductsResponse(products=[product(units=4, nanos=0)])
    paths = ["products.price.units", "products.price.nanos"]
    assert unset_paths(response, paths) == ["products.price.nanos"]
    assert unset_paths(response, paths, may_be_empty={"products.price.nanos"}) == []


def test_a_field_that_tracks_presence_is_filled_by_a_zero_set_on_purpose() -> None:
    sold_out = catalog_pb.ProductStock(available=0)
    assert unset_paths(sold_out, ["available"]) == []
    assert unset_paths(catalog_pb.ProductStock(), ["available"]) == ["available"]


def test_only_keeps_the_declared_fields_of_every_element() -> None:
    response = catalog_pb.BatchGetProductsResponse(products=[product("Tea"), product("Cup")])
    kept = only(response, ["products.name", "products.price"])
    assert [(p.id, p.name, p.price.units) for p in kept.products] == [
        ("", "Tea", 4),
        ("", "Cup", 4),
    ]
    assert set_paths(kept) == {
        "products.name", "products.price.currency_code", "products.price.units",
        "products.price.nanos",
    }  # fmt: skip
    assert response.products[0].id == "id-Tea"  # the message itself is left as it was


def test_a_consumer_is_handed_its_event_with_its_fields_and_the_runtimes(tmp_path: Path) -> None:
    placements = contract(tmp_path, "inventory", "orders", PLACEMENTS)
    confirmed = events_pb2.EventEnvelope(
        event_id="e2",
        order_id="o1",
        producer="orders",
        order_confirmed=events_pb2.OrderConfirmed(order_id="o1", customer_id="alice"),
    )
    [placement, confirmation] = placements.events
    handed = given_to(confirmation, confirmed)
    assert handed.WhichOneof("payload") == "order_confirmed"
    assert set_paths(handed) == {"event_id", "order_id", "order_confirmed"}
    assert set_paths(given_to(placement, placed(2, 1))) == {
        "event_id", "order_id", "order_placed.lines.product_id", "order_placed.lines.quantity",
    }  # fmt: skip


def test_undeclared_paths_are_the_fields_no_declared_path_covers() -> None:
    request = catalog_pb.CreateProductRequest(product=product("Tea"), initial_stock=3)
    declared = ["product.name", "product.price", "initial_stock"]
    assert undeclared_paths(request, declared) == ["product.id"]


def test_a_response_that_leaves_a_declared_field_unset_breaks_the_contract(
    tmp_path: Path,
) -> None:
    prices = contract(tmp_path, "orders", "catalog", PRICES)
    [interaction] = prices.interactions
    whole = catalog_pb.BatchGetProductsResponse(products=[product("Tea", nanos=0)])
    assert verify_response(prices, interaction, whole) == []
    nameless = catalog_pb.BatchGetProductsResponse(products=[product("Tea"), product("")])
    [breach] = verify_response(prices, interaction, nameless)
    assert str(breach) == (
        "orders relies on catalog: BatchGetProducts, given the products exist: "
        f"products.name is left unset or empty (contract {prices.source})"
    )


def test_an_event_no_flow_publishes_breaks_the_contract(tmp_path: Path) -> None:
    placements = contract(tmp_path, "inventory", "orders", PLACEMENTS)
    breaches = verify_events(placements, [placed(2)])
    assert [str(b) for b in breaches] == [
        "inventory relies on orders: event orders.order_confirmed: no flow of orders "
        f"publishes it (contract {placements.source})"
    ]


def test_an_event_that_leaves_a_declared_field_unset_breaks_the_contract(
    tmp_path: Path,
) -> None:
    placements = contract(tmp_path, "inventory", "orders", PLACEMENTS)
    confirmed = events_pb2.EventEnvelope(
        event_id="e2", order_id="o1", producer="orders", order_confirmed=events_pb2.OrderConfirmed()
    )
    unnumbered = placed(2)
    unnumbered.ClearField("event_id")
    breaches = verify_events(placements, [placed(2, 0), unnumbered, confirmed])
    assert [(b.interaction, b.problem) for b in breaches] == [
        ("event orders.order_placed", "event_id is left unset or empty in 1 of 2 published"),
        (
            "event orders.order_placed",
            "order_placed.lines.quantity is left unset or empty in 1 of 2 published",
        ),
    ]


def test_a_call_or_event_of_the_topology_without_a_contract_is_a_gap(tmp_path: Path) -> None:
    topology = parse(
        "services:\n"
        "  catalog: {}\n"
        "  orders:\n"
        "    calls: {catalog: {methods: [BatchGetProducts, GetProduct]}}\n"
        "  inventory: {consumes: [orders.order_placed]}\n"
    )
    prices = contract(tmp_path, "orders", "catalog", PRICES)
    placements = contract(tmp_path, "inventory", "orders", PLACEMENTS)
    assert topology_gaps(topology, [prices, placements]) == [
        "orders calls catalog.GetProduct (mesh.yaml), but no contract of orders declares it",
        f"{placements.source}: inventory does not consume orders.order_confirmed (mesh.yaml)",
    ]
    assert topology_gaps(topology, []) == [
        "orders calls catalog.BatchGetProducts (mesh.yaml), but no contract of orders declares it",
        "orders calls catalog.GetProduct (mesh.yaml), but no contract of orders declares it",
        "orders calls catalog (mesh.yaml), but has no contract on it",
        "inventory consumes orders.order_placed (mesh.yaml), "
        "but no contract of inventory declares it",
    ]
