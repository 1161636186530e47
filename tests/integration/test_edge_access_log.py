"""The edge's access log: one JSON line per request in the edge's log, with the consumer,
the client's method and path, the route, the HTTP and the real gRPC status, the sizes and
times and the trace id; `meshctl logs edge` shows it and keeps one consumer's lines; and
the edge counts each consumer's requests."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from mesh.control.envoy import admin_get
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc
from tests.support.mesh import RunningMesh, bearer
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

MISSING = "00000000-0000-0000-0000-000000000000"


@pytest.fixture(scope="module")
def edge(mesh: RunningMesh) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mesh.edge_url, timeout=30) as client:
        yield client


def traced() -> tuple[str, dict[str, str]]:
    """A new trace id, and the `traceparent` header that starts a request in it."""
    trace_id = secrets.token_hex(16)
    return trace_id, {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}


def access_line(mesh: RunningMesh, trace_id: str) -> dict[str, Any]:
    """The edge's access log line of the request in trace `trace_id`, once written."""

    def found() -> dict[str, Any] | None:
        for line in (mesh.run_dir / "logs" / "edge.envoy.log").read_text().splitlines():
            if trace_id in line and line.startswith("{"):
                fields: dict[str, Any] = json.loads(line)
                if fields.get("logger") == "edge.access":
                    return fields
        return None

    return wait_until(found, f"an access log line of trace {trace_id}", 10, 0.1)


def test_a_rest_call_is_one_line_with_its_consumer_route_statuses_sizes_and_trace(
    mesh: RunningMesh, edge: httpx.Client
) -> None:
    subject = f"access-{uuid.uuid4().hex[:8]}"
    token = mesh.token(subject)
    trace_id, headers = traced()
    listed = edge.get("/v1/products?pageSize=2", headers={**headers, **bearer(token)})
    assert listed.status_code == 200
    line = access_line(mesh, trace_id)
    assert line["consumer"] == subject
    assert (line["http_method"], line["path"]) == ("GET", "/v1/products?pageSize=2")
    assert line["rpc"] == "/shop.catalog.v1.CatalogService/ListProducts"
    assert line["route"] == "catalog.v1.ListProducts"
    assert (line["status"], line["grpc_status"], line["level"]) == (200, "0", "INFO")
    assert line["bytes_sent"] == len(listed.content)
    assert line["duration_ms"] >= line["upstream_ms"] >= 0
    assert line["client"] == "127.0.0.1"
    assert line["message"] == f"GET /v1/products?pageSize=2 200 {line['duration_ms']}ms"
    assert token not in json.dumps(line)


def test_a_failed_call_logs_the_services_own_grpc_status(
    mesh: RunningMesh, edge: httpx.Client
) -> None:
    trace_id, headers = traced()
    assert edge.get(f"/v1/products/{MISSING}", headers=headers).status_code == 404
    line = access_line(mesh, trace_id)
    # NOT_FOUND, not the UNIMPLEMENTED Envoy would make of the transcoded 404.
    assert (line["status"], line["grpc_status"], line["level"]) == (404, "5", "WARNING")
    assert line["consumer"] is None

    trace_id, headers = traced()
    with grpc.insecure_channel(mesh.edge_url.removeprefix("http://")) as channel:
        stub = catalog_grpc.CatalogServiceStub(channel)
        with pytest.raises(grpc.RpcError) as failed:
            stub.GetProduct(catalog_pb.GetProductRequest(id=MISSING), metadata=[*headers.items()])
        stub.ListProducts(catalog_pb.ListProductsRequest(), metadata=[*traced()[1].items()])
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    line = access_line(mesh, trace_id)
    assert (line["http_method"], line["protocol"]) == ("POST", "HTTP/2")
    assert (line["status"], line["grpc_status"]) == (200, "5")


def test_meshctl_logs_edge_shows_one_consumers_requests_and_the_edge_counts_them(
    mesh: RunningMesh, edge: httpx.Client
) -> None:
    subject = f"consumer-{uuid.uuid4().hex[:8]}"
    token = mesh.token(subject)
    traces = []
    for _ in range(3):
        trace_id, headers = traced()
        assert edge.get("/v1/products", headers={**headers, **bearer(token)}).status_code == 200
        traces.append(trace_id)
    edge.get("/v1/products")  # someone else's
    access_line(mesh, traces[-1])
    shown = mesh.meshctl("logs", "edge", "--consumer", subject).stdout.splitlines()
    assert len(shown) == 3
    for line, trace_id in zip(shown, traces, strict=True):
        assert line.startswith("edge ")
        assert "edge.access: GET /v1/products 200" in line
        assert line.endswith(f"trace={trace_id}")
    raw = mesh.meshctl("logs", "edge", "--consumer", subject, "--json").stdout.splitlines()
    assert {json.loads(line.split("| ", 1)[1])["consumer"] for line in raw} == {subject}

    socket = mesh.state()["edge"]["admin_socket"]
    stats = admin_get(socket, "/stats/prometheus?filter=edge_consumers").decode()
    assert f'envoy_edge_consumers_requests{{consumer="{subject}",status="200"}} 3' in stats
