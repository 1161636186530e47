"""The edge's reflection knows the public API only, built from the real descriptor set."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pool

from mesh.control.contracts import DESCRIPTOR_SET, Workspace
from mesh.control.edge_companion import descriptor_pool_of

EXPOSED = ["shop.catalog.v1.CatalogService", "shop.shipping.v1.ShippingService"]


@pytest.fixture(scope="module")
def pool() -> descriptor_pool.DescriptorPool:
    root = Workspace.find(Path(__file__).parent).root
    return descriptor_pool_of(root / DESCRIPTOR_SET, EXPOSED)


def test_an_exposed_service_keeps_only_its_public_methods(
    pool: descriptor_pool.DescriptorPool,
) -> None:
    shipping = pool.FindServiceByName("shop.shipping.v1.ShippingService")
    assert [m.name for m in shipping.methods] == ["QuoteShipment", "GetShipment"]


@pytest.mark.parametrize(
    "service", ["shop.processor.v1.ProcessorService", "shop.orders.v1.OrdersService"]
)
def test_a_service_the_edge_does_not_expose_is_unknown(
    pool: descriptor_pool.DescriptorPool, service: str
) -> None:
    with pytest.raises(KeyError):
        pool.FindServiceByName(service)


@pytest.mark.parametrize(
    "message",
    [
        "shop.shipping.v1.CreateShipmentRequest",
        "shop.events.v1.EventEnvelope",
        "shop.orders.v1.Order",
    ],
)
def test_a_message_no_public_method_reaches_is_unknown(
    pool: descriptor_pool.DescriptorPool, message: str
) -> None:
    with pytest.raises(KeyError):
        pool.FindMessageTypeByName(message)


def test_what_public_methods_reach_is_known_across_packages(
    pool: descriptor_pool.DescriptorPool,
) -> None:
    shipment = pool.FindMessageTypeByName("shop.shipping.v1.Shipment")
    cost = shipment.fields_by_name["cost"].message_type
    assert cost is not None
    assert cost.full_name == "google.type.Money"
    assert pool.FindEnumTypeByName("shop.shipping.v1.ShipmentStatus").values
