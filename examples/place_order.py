"""Place an order through the edge with the generated gRPC stubs.

    .venv/bin/python examples/place_order.py [--edge 127.0.0.1:8080]
    .venv/bin/python examples/place_order.py --edge 127.0.0.1:8443 --ca .mesh/pki/ca/ca.pem

With `--ca`, the calls go over TLS to the edge's HTTPS port, the edge's certificate
verified against that CA (the mesh's, which issues the edge's certificate unless mesh.yaml
names your own); without it, over plaintext HTTP/2 to the plain port.

It registers a customer (identity), logs in for a token, picks a product the shop can
really send two units of (in stock, with a shipping weight: browsing needs no token),
places an order for it, then follows the order until the saga has confirmed or
cancelled it and prints its history, and why, if it was cancelled. Every call goes
through the edge, as a client outside the mesh would make it.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

import grpc
from google.type import postal_address_pb2

from shop.catalog.v1 import catalog_service_pb2 as catalog
from shop.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc
from shop.identity.v1 import identity_service_pb2 as identity
from shop.identity.v1 import identity_service_pb2_grpc as identity_grpc
from shop.orders.v1 import orders_service_pb2 as orders
from shop.orders.v1 import orders_service_pb2_grpc as orders_grpc


def _channel(edge: str, ca: Path | None) -> grpc.Channel:
    if ca is None:
        return grpc.insecure_channel(edge)
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    return grpc.secure_channel(edge, credentials)


#: Units ordered of the product.
QUANTITY = 2


def orderable(products: catalog_grpc.CatalogServiceStub) -> catalog.Product | None:
    """The first product of the catalog with `QUANTITY` units in stock and a shipping
    weight; None if there is none."""
    token = ""
    while True:
        page = products.ListProducts(
            catalog.ListProductsRequest(
                page_size=100, page_token=token, view=catalog.PRODUCT_VIEW_WITH_STOCK
            )
        )
        for product in page.products:
            in_stock = product.stock.state == catalog.STOCK_STATE_CURRENT
            if in_stock and product.stock.available >= QUANTITY and product.weight_grams > 0:
                found: catalog.Product = product
                return found
        token = page.next_page_token
        if not token:
            return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edge", default="127.0.0.1:8080", help="the edge's host:port")
    parser.add_argument("--ca", type=Path, help="over TLS, trusting this CA's certificates")
    args = parser.parse_args(argv)

    with _channel(args.edge, args.ca) as channel:
        accounts = identity_grpc.IdentityServiceStub(channel)
        email = f"demo-{uuid.uuid4().hex[:8]}@example.org"
        accounts.Register(identity.RegisterRequest(email=email, password="correct horse"))
        token = accounts.Login(identity.LoginRequest(email=email, password="correct horse"))
        auth = (("authorization", f"Bearer {token.access_token}"),)

        product = orderable(catalog_grpc.CatalogServiceStub(channel))
        if product is None:
            print(
                f"no product has {QUANTITY} units in stock: create one with an initialStock "
                "first (README, 'Events and the order saga')",
                file=sys.stderr,
            )
            return 1

        shop = orders_grpc.OrdersServiceStub(channel)
        placed = shop.PlaceOrder(
            orders.PlaceOrderRequest(
                lines=[orders.OrderLine(product_id=product.id, quantity=QUANTITY)],
                shipping_address=postal_address_pb2.PostalAddress(
                    region_code="DE", postal_code="10115", address_lines=["Hauptstr. 1"]
                ),
                payment_token="tok_visa",
                request_id=str(uuid.uuid4()),
            ),
            metadata=auth,
        ).order
        # The saga runs after PlaceOrder returns: follow the order until it is final.
        deadline = time.monotonic() + 30
        while True:
            again = shop.GetOrder(orders.GetOrderRequest(id=placed.id), metadata=auth).order
            if again.status != orders.ORDER_STATUS_PENDING or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        total = f"{again.total.units}.{again.total.nanos // 10_000_000:02d}"
        status = orders.OrderStatus.Name(again.status)
        print(
            f"order {again.id}: {QUANTITY} x {product.name}, {total} "
            f"{again.total.currency_code}, {status}"
        )
        if again.status == orders.ORDER_STATUS_CANCELLED:
            print(f"  cancelled: {again.cancel_reason}")
        for step in again.history:
            outcome = orders.SagaStepOutcome.Name(step.outcome).removeprefix("SAGA_STEP_OUTCOME_")
            when = step.time.ToDatetime()
            print(f"  {when:%H:%M:%S.%f}  {step.name:<18} {outcome:<11} {step.detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
