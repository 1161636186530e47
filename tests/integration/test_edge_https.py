"""HTTPS at the edge end to end, with the real Envoy, curl, grpcurl and gRPC's Python
client: REST and native gRPC over TLS verifying the mesh CA, HTTP/2 by ALPN, old TLS
refused; plain HTTP redirecting (REST) or refusing (gRPC), or off; the user's own
certificate, replaced on disk and served within seconds by the same Envoy process."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from cryptography import x509

from mesh.control import envoy
from mesh.control.binaries import find_binary
from mesh.control.envoy import edge
from mesh.control.pki import MeshPKI
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc
from shop.inventory.v1 import inventory_service_pb2 as inventory_pb
from shop.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from shop.orders.v1 import orders_service_pb2 as orders_pb
from shop.orders.v1 import orders_service_pb2_grpc as orders_grpc
from tests.support.mesh import ROOT, SMALL_MESH_YAML, RunningMesh, bearer, mesh_up
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

TEA = {"name": "Tea", "category": "food", "weightGrams": 100,
       "price": {"currencyCode": "EUR", "units": "3"}}  # fmt: skip


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    """The real curl (the system's: it is no Python package)."""
    binary = shutil.which("curl")
    if binary is None:
        pytest.skip("curl is not installed here")
    return subprocess.run(
        [binary, "--silent", "--show-error", "--max-time", "20", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    """The real grpcurl, knowing the API from the edge's reflection only."""
    return subprocess.run(
        [find_binary("grpcurl"), "-connect-timeout", "3", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def served_serial(address: str) -> int:
    """The serial number of the certificate the edge presents at `address` now."""
    host, port = address.rsplit(":", 1)
    pem = ssl.get_server_certificate((host, int(port)), timeout=5)
    return x509.load_pem_x509_certificate(pem.encode()).serial_number


# -- the repository's mesh: HTTPS beside plain HTTP, the mesh CA's certificate ------------


def test_rest_over_https_verifies_the_mesh_ca_and_speaks_http2(mesh: RunningMesh) -> None:
    address, ca = mesh.https_address, str(mesh.ca)
    assert mesh.state()["edge"]["ca"] == ca
    answer = f"https://{address}/v1/products?pageSize=1"
    h2 = curl("--cacert", ca, "--output", "/dev/null", "--write-out", "%{http_version}", answer)
    assert (h2.returncode, h2.stdout) == (0, "2"), h2.stderr
    h1 = curl("--cacert", ca, "--http1.1", "--output", "/dev/null", "-w", "%{http_code}", answer)
    assert h1.stdout == "200", h1.stderr
    # The certificate names localhost too; and nothing in the system's roots vouches for it.
    port = address.rsplit(":", 1)[1]
    assert curl("--cacert", ca, f"https://localhost:{port}/healthz").stdout == (
        '{"status":"SERVING"}'
    )
    untrusted = curl(f"https://{address}/healthz")
    assert untrusted.returncode == 60, untrusted.stderr  # the peer could not be verified
    # Plain HTTP serves clients too: browsers are not told to keep to HTTPS.
    headers = curl("--cacert", ca, "--head", f"https://{address}/healthz").stdout.lower()
    assert "strict-transport-security" not in headers


def test_tls_older_than_1_2_is_refused(mesh: RunningMesh) -> None:
    """A client that offers TLS 1.1 at most (its own security level lowered so that it
    does offer it) gets the server's protocol-version alert."""
    old = curl(
        "--verbose", "--tls-max", "1.1", "--ciphers", "DEFAULT@SECLEVEL=0",
        "--cacert", str(mesh.ca), f"https://{mesh.https_address}/healthz",
    )  # fmt: skip
    assert old.returncode == 35, old.stderr  # a TLS handshake that failed
    assert "alert protocol version" in old.stderr


def test_grpcurl_over_tls_lists_and_calls_a_public_method(mesh: RunningMesh) -> None:
    address, ca = mesh.https_address, str(mesh.ca)
    listed = grpcurl("-cacert", ca, address, "list")
    assert listed.returncode == 0, listed.stderr
    assert "shop.catalog.v1.CatalogService" in listed.stdout.split()
    called = grpcurl(
        "-cacert", ca, "-d", '{"page_size": 1}', address,
        "shop.catalog.v1.CatalogService/ListProducts",
    )  # fmt: skip
    assert called.returncode == 0, called.stderr
    assert isinstance(json.loads(called.stdout), dict)
    # The whole chain runs over TLS too: a method that needs a token refuses a call without.
    secured = grpcurl("-cacert", ca, "-d", "{}", address, "shop.orders.v1.OrdersService/ListOrders")
    assert "Code: Unauthenticated" in secured.stderr


def test_a_python_client_calls_through_the_edge_over_tls(mesh: RunningMesh) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=mesh.ca.read_bytes())
    with grpc.secure_channel(mesh.https_address, credentials) as channel:
        products = catalog_grpc.CatalogServiceStub(channel).ListProducts(
            catalog_pb.ListProductsRequest(page_size=1), timeout=10
        )
        assert isinstance(products, catalog_pb.ListProductsResponse)
        with pytest.raises(grpc.RpcError) as refused:
            orders_grpc.OrdersServiceStub(channel).ListOrders(
                orders_pb.ListOrdersRequest(), timeout=10
            )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Without the mesh CA, the handshake fails: the client does not know who answers.
    untrusted_channel = grpc.secure_channel(mesh.https_address, grpc.ssl_channel_credentials())
    with untrusted_channel, pytest.raises(grpc.RpcError) as untrusted:
        catalog_grpc.CatalogServiceStub(untrusted_channel).ListProducts(
            catalog_pb.ListProductsRequest(page_size=1), timeout=10
        )
    assert untrusted.value.code() == grpc.StatusCode.UNAVAILABLE


def test_the_examples_call_the_edge_over_tls(mesh: RunningMesh) -> None:
    address, ca = mesh.https_address, str(mesh.ca)
    admin = bearer(mesh.token("admin", "catalog:write"))
    with httpx.Client(
        base_url=f"https://{address}", verify=ssl.create_default_context(cafile=ca)
    ) as client:
        assert client.post("/v1/products", json={"product": TEA}, headers=admin).status_code == 200
    shell = subprocess.run(
        [str(ROOT / "examples" / "https.sh"), address, ca],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip
    assert shell.returncode == 0, shell.stderr
    assert "\nHTTP/2\n" in shell.stdout
    assert "shop.catalog.v1.CatalogService" in shell.stdout.split()
    placed = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "place_order.py"), "--edge", address, "--ca", ca],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert placed.returncode == 0, placed.stderr
    assert "ORDER_STATUS_CONFIRMED" in placed.stdout or "ORDER_STATUS_CANCELLED" in placed.stdout


# -- a mesh of its own: plain HTTP redirects, the user's own certificate ------------------

OWN_CERTIFICATE_MESH = SMALL_MESH_YAML + (
    "  http: redirect\n  https: {cert_file: certs/edge.pem, key_file: certs/edge-key.pem}\n"
)


def users_pair(authority: MeshPKI) -> tuple[bytes, bytes, int]:
    """A new certificate for 127.0.0.1 and localhost from the user's own CA (not the
    mesh's): its PEM, its key's PEM, its serial."""
    info = authority.issue_server("edge", ["localhost", "127.0.0.1"])
    return info.cert_path.read_bytes(), info.key_path.read_bytes(), info.serial


@pytest.fixture(scope="module")
def own_certificate(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningMesh, MeshPKI, int]]:
    """The mesh, the user's CA, and the serial of the certificate it started with."""
    directory = tmp_path_factory.mktemp("own-certificate")
    authority = MeshPKI(directory / "users-ca", "users.example", "tls")
    cert, key, serial = users_pair(authority)
    (directory / "certs").mkdir()
    (directory / "certs" / "edge.pem").write_bytes(cert)
    (directory / "certs" / "edge-key.pem").write_bytes(key)
    config = directory / "mesh.yaml"
    config.write_text(OWN_CERTIFICATE_MESH)
    with mesh_up(RunningMesh(directory / "run", config)) as running:
        yield running, authority, serial


def test_plain_http_redirects_rest_with_308_and_refuses_grpc_naming_the_port(
    own_certificate: tuple[RunningMesh, MeshPKI, int],
) -> None:
    running, authority, _ = own_certificate
    state = running.state()["edge"]
    https, plain = state["https_url"], state["http_url"]
    assert (state["url"], state["ca"]) == (https, None)  # clients go to HTTPS; not the mesh CA
    with httpx.Client(timeout=10) as client:
        moved = client.post(f"{plain}/v1/users?source=plain", json={})
        assert moved.status_code == 308
        assert moved.headers["location"] == f"{https}/v1/users?source=plain"
        assert client.get(f"{plain}/healthz").status_code == 200  # probes stay on plain
    followed = curl(
        "--location", "--cacert", str(authority.ca_path), "--output", "/dev/null",
        "--write-out", "%{http_code} %{url_effective}", f"{plain}/v1/products/p/stock",
    )  # fmt: skip
    assert followed.stdout == f"404 {https}/v1/products/p/stock", followed.stderr
    port = https.rsplit(":", 1)[1]
    refused = grpcurl("-plaintext", plain.removeprefix("http://"), "list")
    assert "code = FailedPrecondition" in refused.stderr
    assert f"use TLS on port {port}" in refused.stderr
    with grpc.insecure_channel(plain.removeprefix("http://")) as channel:
        stock = inventory_grpc.InventoryServiceStub(channel)
        with pytest.raises(grpc.RpcError) as plaintext:
            stock.GetStock(inventory_pb.GetStockRequest(product_id="p"), timeout=10)
    assert plaintext.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"use TLS on port {port}" in (plaintext.value.details() or "")
    # With plain HTTP no longer for clients, browsers are told to keep to HTTPS.
    headers = curl("--cacert", str(authority.ca_path), "--head", f"{https}/healthz").stdout
    assert "strict-transport-security: max-age=31536000" in headers.lower()


def test_a_replaced_certificate_is_served_within_seconds_without_a_restart(
    own_certificate: tuple[RunningMesh, MeshPKI, int],
) -> None:
    """The user's files are rewritten in place, the key first: a write Envoy itself would
    never see. Until the certificate matches the key the old pair is served; then the new
    one, by the same Envoy process."""
    running, authority, first = own_certificate
    address = running.https_address
    assert served_serial(address) == first
    before = running.state()["edge"]
    cert, key, second = users_pair(authority)
    certs = running.config.parent / "certs"
    (certs / "edge-key.pem").write_bytes(key)
    with pytest.raises(AssertionError):
        wait_until(lambda: served_serial(address) != first, "a mismatched pair served", 2.5)
    (certs / "edge.pem").write_bytes(cert)
    wait_until(lambda: served_serial(address) == second, "the new certificate served", 5)
    after = running.state()["edge"]
    assert (after["pid"], after["restarts"]) == (before["pid"], before["restarts"])
    verified = curl("--cacert", str(authority.ca_path), f"https://{address}/healthz")
    assert verified.stdout == '{"status":"SERVING"}', verified.stderr
    log = (running.run_dir / "logs" / "edge.log").read_text()
    assert f"the edge serves the certificate with serial {second:x}" in log
    assert "is not the key of the certificate" in log


# -- a mesh of its own: plain HTTP off -------------------------------------------------------

PLAIN_OFF_MESH = SMALL_MESH_YAML + "  http: off\n  https: {}\n"


def test_with_plain_http_off_only_https_listens_for_clients(tmp_path: Path) -> None:
    """The edge's own calls (identity's JWKS, which its readiness waited for; the health
    checks its companion relays) go to a listener on loopback; clients find HTTPS only."""
    config = tmp_path / "mesh.yaml"
    config.write_text(PLAIN_OFF_MESH)
    with mesh_up(RunningMesh(tmp_path / "run", config)) as running:
        state = running.state()["edge"]
        listeners = json.loads(envoy.admin_get(state["admin_socket"], "/listeners?format=json"))
        health = grpcurl(
            "-cacert", str(running.ca), "-d", '{"service": "shop.inventory.v1.InventoryService"}',
            running.https_address, "grpc.health.v1.Health/Check",
        )  # fmt: skip
        fetched = edge.jwks_fetched(state["admin_socket"])
    assert (state["http_url"], state["url"]) == (None, state["https_url"])
    addresses = {
        item["name"]: item["local_address"]["socket_address"]["address"]
        for item in listeners["listener_statuses"]
    }
    assert addresses == {"edge_internal": "127.0.0.1", "edge_https": "127.0.0.1"}
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout) == {"status": "SERVING"}
    assert fetched
