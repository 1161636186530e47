"""Every service as its own process in a running mesh, called as a user would call it.

Each service is listed, described and called with grpcurl through reflection, and every
RPC of every service is sent bad input, which must never be answered with INTERNAL or
UNKNOWN. (The mesh is the session's, from conftest.py, but for the test of `meshctl
down`, which starts one of its own.)
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from mesh.control.binaries import find_binary
from mesh.runtime.caller import SUBJECT_METADATA_KEY
from tests.support.mesh import ROOT, RunningMesh, bearer, customer, mesh_up
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

SERVICES = {
    "catalog", "inventory", "orders", "payments", "shipping", "identity", "notifications",
    "processor", "search",
}  # fmt: skip


def _apps(mesh: RunningMesh) -> dict[str, str]:
    """Each service's first app address (plaintext gRPC on loopback, as the sidecar sees it)."""
    found: dict[str, str] = {}
    for instance in mesh.state()["instances"]:
        found.setdefault(instance["service"], f"127.0.0.1:{instance['app_port']}")
    return found


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_binary("grpcurl"), "-plaintext", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def call(address: str, method: str, request: dict[str, Any], *headers: str) -> dict[str, Any]:
    """Call `method` (service/Method) through reflection; the JSON response."""
    options = [item for header in headers for item in ("-H", header)]
    result = grpcurl(*options, "-d", json.dumps(request), address, method)
    assert result.returncode == 0, f"{method}: {result.stdout}{result.stderr}"
    response: dict[str, Any] = json.loads(result.stdout or "{}")
    return response


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_service_is_listed_and_described_through_reflection(
    mesh: RunningMesh, service: str
) -> None:
    address = _apps(mesh)[service]
    full_name = f"shop.{service}.v1.{service.capitalize()}Service"
    listing = grpcurl(address, "list")
    assert listing.returncode == 0, listing.stderr
    assert set(listing.stdout.split()) >= {full_name, "grpc.health.v1.Health"}
    described = grpcurl(address, "describe", full_name)
    assert described.returncode == 0, described.stderr
    assert f"service {service.capitalize()}Service {{" in described.stdout


def test_a_customer_journey_across_the_services(mesh: RunningMesh) -> None:
    at = _apps(mesh)
    user = _registered_user(at["identity"])
    product = _product_in_stock(at["catalog"], at["inventory"])
    order = _placed_order(at["orders"], user, product)
    _shipping_quoted(at["shipping"])
    _payment_authorized(at["payments"], user, order)
    # The order's saga ends it one way or the other, and the customer is told, once.
    told = _notifications(at["notifications"], user)
    assert [n["orderId"] for n in told] == [order["id"]]


def _registered_user(identity: str) -> dict[str, Any]:
    """A user registered with identity, which signs tokens with RS256 keys it publishes."""
    user: dict[str, Any] = call(
        identity,
        "shop.identity.v1.IdentityService/Register",
        {"email": "Ada@Example.org", "password": "correct horse battery"},
    )["user"]
    assert user["email"] == "ada@example.org"
    jwks = call(identity, "shop.identity.v1.IdentityService/GetJwks", {})
    assert jwks["keys"][0]["alg"] == "RS256"
    return user


def _product_in_stock(catalog: str, inventory: str) -> dict[str, Any]:
    """A product created in the catalog with five in stock, as inventory reports."""
    product: dict[str, Any] = call(
        catalog,
        "shop.catalog.v1.CatalogService/CreateProduct",
        {
            "product": {
                "name": "Tea",
                "category": "food",
                "weight_grams": 100,
                "price": {"currency_code": "EUR", "units": 4, "nanos": 500000000},
            },
            "initial_stock": 5,
        },
    )["product"]
    stock = call(
        inventory,
        "shop.inventory.v1.InventoryService/GetStock",
        {"product_id": product["id"]},
    )["stock"]
    assert (stock["onHand"], stock["available"]) == (5, 5)
    return product


def _placed_order(orders: str, user: dict[str, Any], product: dict[str, Any]) -> dict[str, Any]:
    """Two of `product` ordered by `user`, pending, at the catalog's price."""
    # The client's price is ignored: orders reads it from the catalog.
    order: dict[str, Any] = call(
        orders,
        "shop.orders.v1.OrdersService/PlaceOrder",
        {
            "lines": [
                {
                    "product_id": product["id"],
                    "quantity": 2,
                    "unit_price": {"currency_code": "EUR", "units": 1},
                }
            ],
            "shipping_address": {
                "region_code": "DE",
                "postal_code": "10115",
                "address_lines": ["Hauptstr. 1"],
            },
            "payment_token": "tok_visa",
        },
        f"{SUBJECT_METADATA_KEY}: {user['id']}",
    )["order"]
    assert order["status"] == "ORDER_STATUS_PENDING"
    assert order["total"] == {"currency_code": "EUR", "units": "9"}  # grpcurl: proto names
    return order


def _shipping_quoted(shipping: str) -> None:
    quote = call(
        shipping,
        "shop.shipping.v1.ShippingService/QuoteShipment",
        {"destination": {"region_code": "FR", "postal_code": "75001"}, "weight_grams": 500},
    )
    assert quote["cost"]["currency_code"] == "EUR"


def _payment_authorized(payments: str, user: dict[str, Any], order: dict[str, Any]) -> None:
    payment = call(
        payments,
        "shop.payments.v1.PaymentsService/AuthorizePayment",
        {
            "order_id": order["id"],
            "customer_id": user["id"],
            "amount": {"currency_code": "EUR", "units": 9},
            "payment_token": "tok_visa",
            "request_id": "journey-1",
        },
    )["payment"]
    assert payment["status"] == "PAYMENT_STATUS_AUTHORIZED"


def _notifications(notifications: str, user: dict[str, Any]) -> list[dict[str, Any]]:
    """The user's notifications, once there is one."""

    def listed() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = call(
            notifications,
            "shop.notifications.v1.NotificationsService/ListNotifications",
            {"customer_id": user["id"]},
            f"{SUBJECT_METADATA_KEY}: {user['id']}",
        ).get("notifications", [])
        return found

    return wait_until(listed, "a notification of the order", 30, 0.2)


def _methods() -> list[tuple[str, str, type[Message]]]:
    """(service, /full/Method path, request class) of every RPC of every service."""
    found = []
    for service in sorted(SERVICES):
        module = importlib.import_module(f"shop.{service}.v1.{service}_service_pb2")
        for descriptor in module.DESCRIPTOR.services_by_name.values():
            for method in descriptor.methods:
                request = message_factory.GetMessageClass(method.input_type)
                found.append((service, f"/{descriptor.full_name}/{method.name}", request))
    return found


def _junk(message: Message, depth: int = 0) -> Message:
    """`message` with every field set to a plausible-looking wrong value."""
    for field in message.DESCRIPTOR.fields:
        if field.message_type is not None:
            if depth < 3 and not field.message_type.GetOptions().map_entry:
                target = getattr(message, field.name)
                _junk(target.add() if field.is_repeated else target, depth + 1)
            continue
        value: object = {
            FieldDescriptor.CPPTYPE_STRING: "\u0000' OR 1=1 --"
            if field.type != field.TYPE_BYTES
            else b"x",
            FieldDescriptor.CPPTYPE_BOOL: True,
            FieldDescriptor.CPPTYPE_ENUM: 999,
            FieldDescriptor.CPPTYPE_DOUBLE: -1e308,
            FieldDescriptor.CPPTYPE_FLOAT: -1.0,
        }.get(field.cpp_type, -(2**31) if field.cpp_type == FieldDescriptor.CPPTYPE_INT32 else -1)
        if field.cpp_type in (FieldDescriptor.CPPTYPE_UINT32, FieldDescriptor.CPPTYPE_UINT64):
            value = 2**32 - 1
        if field.is_repeated:
            getattr(message, field.name).append(value)
        else:
            setattr(message, field.name, value)
    return message


@pytest.mark.parametrize("shape", ["empty", "junk"])
def test_bad_input_is_never_answered_with_internal_or_unknown(
    mesh: RunningMesh, shape: str
) -> None:
    apps = _apps(mesh)
    answers: dict[str, str] = {}
    for service, path, request_class in _methods():
        request = request_class() if shape == "empty" else _junk(request_class())
        with grpc.insecure_channel(apps[service]) as channel:
            stub = channel.unary_unary(
                path,
                request_serializer=request_class.SerializeToString,
                response_deserializer=lambda raw: raw,
            )
            try:
                stub(request, timeout=10, metadata=((SUBJECT_METADATA_KEY, "someone"),))
                answers[path] = "OK"
            except grpc.RpcError as error:
                answers[path] = error.code().name
    assert len(answers) == len(_methods())
    broken = {path: code for path, code in answers.items() if code in ("INTERNAL", "UNKNOWN")}
    assert broken == {}
    if shape == "empty":
        assert answers["/shop.catalog.v1.CatalogService/CreateProduct"] == "INVALID_ARGUMENT"


def test_up_names_the_line_of_a_bad_topology(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(
        "services:\n  catalog:\n    calls:\n      inventroy: {methods: all}\n  inventory: {}\n"
    )
    result = subprocess.run(
        [find_binary("meshctl"), "up", "--detach", "--config", str(config), "--run-dir",
         str(tmp_path / "run")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"{config}:4: catalog calls unknown service 'inventroy'" in result.stderr
    assert "Traceback" not in result.stderr


def _meshctl(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_binary("meshctl"), *args], capture_output=True, text=True, timeout=60,
        check=False, cwd=cwd,
    )  # fmt: skip


def test_token_is_signed_with_the_key_of_the_running_mesh(mesh: RunningMesh) -> None:
    with httpx.Client(base_url=mesh.edge_url, timeout=10) as edge:
        user_id, _ = customer(edge)
        # From a directory below the checkout, `--run-dir` first and relative to the
        # checkout, as `up` takes it; `mesh.token` gives it after the other arguments.
        relative = os.path.relpath(mesh.run_dir, ROOT)
        minted = _meshctl(
            "token", "--run-dir", relative, "--subject", user_id, "--scope", "catalog:write",
            cwd=ROOT / "services",
        )  # fmt: skip
        assert minted.returncode == 0, minted.stderr
        for token in (minted.stdout.strip(), mesh.token(user_id)):
            me = edge.get("/v1/users/me", headers=bearer(token))
            assert me.status_code == 200, me.text
            assert me.json()["user"]["id"] == user_id
    claims = jwt.decode(minted.stdout.strip(), options={"verify_signature": False})
    assert jwt.get_unverified_header(minted.stdout.strip())["alg"] == "RS256"
    assert (claims["sub"], claims["scope"]) == (user_id, "catalog:write")
    assert claims["exp"] > claims["iat"]


def test_token_where_no_mesh_has_started_refuses_and_makes_no_key(tmp_path: Path) -> None:
    refused = _meshctl("token", "--subject", "user-1", "--run-dir", str(tmp_path))
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr == (
        f"meshctl token: no signing key of identity in {tmp_path}: start the mesh "
        "(`meshctl up`), or pass the --run-dir of a running one\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_down_twice_the_second_says_no_mesh_is_running(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(
        "services:\n  identity: {}\n"
        "edge:\n  expose: [identity]\n  auth: {public: [identity.GetJwks]}\n"
    )
    with mesh_up(RunningMesh(tmp_path / "run", config)) as own:
        first, second = own.meshctl("down"), own.meshctl("down")
        told = own.meshctl("status", check=False)
    assert (first.returncode, second.returncode) == (0, 0)
    assert first.stdout == f"stopped the mesh of {own.run_dir}\n"
    assert second.stdout == f"no mesh is running from {own.run_dir}\n"
    assert told.returncode == 3
    assert told.stdout == second.stdout
