"""Hostile input against the running mesh: what no request may do to it.

Each test is one class of attack, tried at the edge (REST and native gRPC) and at a
sidecar, the way a client or a compromised neighbour would: the answer is a clear 4xx /
INVALID_ARGUMENT that says nothing of the implementation, and the mesh goes on serving.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from tests.integration.conftest import RunningMesh, assert_json_error

pytestmark = pytest.mark.integration

#: What must never reach a client: the words of a Python exception or traceback.
LEAKS = ("Traceback", "Error parsing", "DecodeError", "Unexpected <class", "exception")


@pytest.fixture(scope="module")
def edge(mesh: RunningMesh) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mesh.edge_url, timeout=20) as client:
        yield client


def _leaks_nothing(text: str) -> None:
    assert not [word for word in LEAKS if word.lower() in text.lower()], text


# -- undecodable requests ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/products/%FF%FE", "/v1/orders/%C3%28"])
def test_a_path_parameter_that_is_not_utf8_is_a_bad_request(
    edge: httpx.Client, mesh: RunningMesh, path: str
) -> None:
    token = mesh.token("someone")
    response = edge.get(path, headers={"authorization": f"Bearer {token}"})
    body = assert_json_error(response, 400, grpc.StatusCode.INVALID_ARGUMENT.value[0])
    _leaks_nothing(response.text)
    assert body["details"][0]["reason"] == "MALFORMED_REQUEST"


@pytest.mark.parametrize("raw", [b"\x0a\x02\xff\xfe", b"\x0a\x7f\x01", b"\xff\xff\xff\xff"])
def test_corrupt_protobuf_through_the_edge_is_invalid_argument(
    mesh: RunningMesh, raw: bytes
) -> None:
    address = mesh.edge_url.removeprefix("http://")
    with grpc.insecure_channel(address) as channel:
        call: Any = channel.unary_unary("/shop.catalog.v1.CatalogService/GetProduct")
        with pytest.raises(grpc.RpcError) as failed:
            call(raw, timeout=10)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT, failed.value.details()
    _leaks_nothing(failed.value.details() or "")


# -- page tokens ----------------------------------------------------------------------------


def _crafted(content: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(content).encode()).decode().rstrip("=")


ALL = {"category": ""}
CRAFTED_TOKENS = {
    "wrong-type": _crafted({"after": [], "filters": ALL}),
    "odd-offset": _crafted({"after": {"create_time": "2026-01-01T00:00+25:00"}, "filters": ALL}),
    "number-id": _crafted({"after": {"create_time": "2026-01-01", "id": 7}, "filters": ALL}),
    "after-a-string": _crafted({"after": "abc", "filters": ALL}),
    "offset-before-year-one": _crafted(
        {"after": {"create_time": "0001-01-01T00:00:00+01:00", "id": "x"}, "filters": ALL}
    ),
    "not-an-object": _crafted("after"),
    "garbage": "%%%%",
}


@pytest.mark.parametrize("token", CRAFTED_TOKENS.values(), ids=CRAFTED_TOKENS.keys())
def test_a_page_token_the_service_did_not_issue_is_a_bad_request(
    edge: httpx.Client, token: str
) -> None:
    response = edge.get("/v1/products", params={"pageToken": token})
    body = assert_json_error(response, 400, grpc.StatusCode.INVALID_ARGUMENT.value[0])
    violations = next(d for d in body["details"] if d["@type"].endswith("BadRequest"))
    assert [v["field"] for v in violations["fieldViolations"]] == ["page_token"]
    _leaks_nothing(response.text)


def test_a_page_token_the_service_issued_still_leads_on(
    edge: httpx.Client, mesh: RunningMesh
) -> None:
    admin = {"authorization": f"Bearer {mesh.token('admin', 'catalog:write')}"}
    product = {"name": "Tea", "category": "paged", "price": {"currencyCode": "EUR", "units": "3"}}
    for _ in range(3):
        assert edge.post("/v1/products", json={"product": product}, headers=admin).is_success
    first = edge.get("/v1/products", params={"category": "paged", "pageSize": 2}).json()
    second = edge.get(
        "/v1/products",
        params={"category": "paged", "pageSize": 2, "pageToken": first["nextPageToken"]},
    ).json()
    assert len(first["products"]) == 2
    assert len(second["products"]) >= 1
    assert {p["id"] for p in first["products"]}.isdisjoint(p["id"] for p in second["products"])
