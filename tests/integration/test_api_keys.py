"""API keys on a running mesh: `meshctl keys create|list|revoke` works on the database of
the identity that `up` started, whose JWKS (as the edge serves it) verifies the keys,
whose internal deny list has the revocations at once, and whose REST methods at the edge
share the same keys; and the edge takes a key as `x-api-key`, with its scopes, within its
plan's quotas, until it is revoked."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import httpx
import jwt
import pytest
from google.type import money_pb2

from mesh.control.binaries import find_binary
from mesh.control.envoy import admin_get
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc
from shop.identity.v1 import identity_service_pb2 as pb
from shop.identity.v1 import identity_service_pb2_grpc as pb_grpc
from tests.support.mesh import RunningMesh, bearer

pytestmark = pytest.mark.integration


def verified_key(key: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """The claims of an API key, verified with the JWK its `kid` names, as a key."""
    kid = jwt.get_unverified_header(key)["kid"]
    jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
    claims: dict[str, Any] = jwt.decode(
        key, jwt.PyJWK(jwk).key, algorithms=["ES256"], audience="shop-api-keys",
        issuer="shop-identity",
    )  # fmt: skip
    return claims


def deny_list(mesh: RunningMesh) -> list[str]:
    """The ids identity's internal ListRevokedApiKeys returns, asked at its app."""
    address = f"127.0.0.1:{mesh.instance('identity-0')['app_port']}"
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.IdentityServiceStub(channel)
        request = pb.ListRevokedApiKeysRequest(page_size=100)
        response = stub.ListRevokedApiKeys(request, timeout=10)
    return [key.id for key in response.revoked_api_keys]


def test_meshctl_keys_issues_lists_and_revokes_keys_the_mesh_knows(
    mesh: RunningMesh,
) -> None:
    consumer = f"it-{uuid.uuid4().hex[:8]}"
    created = mesh.meshctl(
        "keys", "create", "--consumer", consumer, "--scope", "catalog:write", "--plan", "free"
    )
    key = created.stdout.strip()
    assert "shown this once" in created.stderr
    with httpx.Client(base_url=mesh.edge_url, timeout=10) as edge:
        jwks = edge.get("/.well-known/jwks.json").json()
    claims = verified_key(key, jwks)
    assert (claims["sub"], claims["scope"], claims["plan"]) == (
        f"consumer:{consumer}", "catalog:write", "free",
    )  # fmt: skip

    listed = mesh.meshctl("keys", "list", "--consumer", consumer, "--json").stdout
    assert [k["id"] for k in json.loads(listed)] == [claims["jti"]]
    assert key.split(".")[2] not in listed
    table = mesh.meshctl("keys", "list", "--consumer", consumer).stdout.splitlines()
    assert table[0].split() == [
        "ID", "CONSUMER", "PLAN", "SCOPES", "KEY", "CREATED", "EXPIRES", "REVOKED",
    ]  # fmt: skip
    assert table[1].split()[:5] == [
        claims["jti"],
        consumer,
        "free",
        "catalog:write",
        f"...{key[-6:]}",
    ]

    assert claims["jti"] not in deny_list(mesh)
    revoked = mesh.meshctl("keys", "revoke", claims["jti"])
    assert revoked.stdout.startswith(f"API key {claims['jti']} of {consumer}: revoked ")
    assert claims["jti"] in deny_list(mesh)


def test_a_key_made_over_rest_is_the_commands_to_list_and_revoke(mesh: RunningMesh) -> None:
    consumer = f"rest-{uuid.uuid4().hex[:8]}"
    admin = bearer(mesh.token("admin", "identity:keys"))
    with httpx.Client(base_url=mesh.edge_url, timeout=10) as edge:
        body = {"apiKey": {"consumer": consumer, "scopes": ["orders:read"], "plan": "gold"}}
        created = edge.post(
            "/v1/apiKeys", json={**body, "requestId": str(uuid.uuid4())}, headers=admin
        )
        assert created.status_code == 200, created.text
        key_id = created.json()["apiKey"]["id"]
        listed = mesh.meshctl("keys", "list", "--consumer", consumer, "--json").stdout
        assert [k["id"] for k in json.loads(listed)] == [key_id]
        mesh.meshctl("keys", "revoke", key_id)
        again = edge.post(f"/v1/apiKeys/{key_id}:revoke", json={}, headers=admin)
        assert again.status_code == 200, again.text
        page = edge.get("/v1/apiKeys", params={"consumer": consumer}, headers=admin).json()
    [shown] = page["apiKeys"]
    assert shown["revokeTime"] == again.json()["apiKey"]["revokeTime"]
    assert "key" not in page
    assert created.json()["key"] not in json.dumps(page)


def test_meshctl_keys_refuses_what_breaks_a_rule_naming_the_option(mesh: RunningMesh) -> None:
    refused = mesh.meshctl("keys", "create", "--consumer", "Acme", "--plan", "free", check=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith("meshctl keys: --consumer: The consumer is a lowercase")
    missing = mesh.meshctl("keys", "revoke", "0123456789abcdef", check=False)
    assert (missing.returncode, missing.stderr) == (
        1, "meshctl keys: API key '0123456789abcdef' does not exist\n",
    )  # fmt: skip


def test_meshctl_keys_where_no_mesh_has_started_refuses_and_makes_nothing(tmp_path: Path) -> None:
    refused = subprocess.run(
        [find_binary("meshctl"), "keys", "list", "--run-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 1
    assert refused.stderr == (
        f"meshctl keys: identity has not started in {tmp_path}: start the mesh "
        "(`meshctl up`), or pass the --run-dir of a running one\n"
    )
    assert list(tmp_path.iterdir()) == []


class NewKey(NamedTuple):
    key: str
    id: str
    consumer: str
    """As the edge names the caller: `consumer:<name>`."""


def new_key(mesh: RunningMesh, *scopes: str, plan: str = "free") -> NewKey:
    """A new API key of a consumer of its own."""
    consumer = f"edge-{uuid.uuid4().hex[:8]}"
    options = [arg for scope in scopes for arg in ("--scope", scope)]
    created = mesh.meshctl("keys", "create", "--consumer", consumer, "--plan", plan, *options)
    key = created.stdout.strip()
    claims = jwt.decode(key, options={"verify_signature": False})
    return NewKey(key, claims["jti"], claims["sub"])


def product(name: str) -> dict[str, Any]:
    return {
        "product": {
            "name": name,
            "category": "books",
            "weightGrams": 300,
            "price": {"currencyCode": "EUR", "units": "3"},
        }
    }


def wait_for_deny_list(edge: httpx.Client, key: str) -> None:
    """The edge refuses every key until its companion wrote the first deny list: wait
    (bounded) until this one is taken."""
    deadline = time.monotonic() + 30
    while edge.get("/v1/products", headers={"x-api-key": key}).status_code == 403:
        assert time.monotonic() < deadline, "the edge never took a valid API key"
        time.sleep(0.2)


def test_the_edge_takes_a_key_with_its_scopes_by_the_rules_tokens_have(mesh: RunningMesh) -> None:
    writer = new_key(mesh, "catalog:write").key
    reader = new_key(mesh, "orders:read").key
    with httpx.Client(base_url=mesh.edge_url, timeout=10) as edge:
        wait_for_deny_list(edge, writer)
        made = edge.post("/v1/products", json=product("keyed"), headers={"x-api-key": writer})
        assert made.status_code == 200, made.text
        refused = edge.post("/v1/products", json=product("no"), headers={"x-api-key": reader})
        assert (refused.status_code, refused.json()["status"]) == (403, "PERMISSION_DENIED")
        forged = edge.get("/v1/products", headers={"x-api-key": writer[:-4] + "AAAA"})
        assert (forged.status_code, forged.json()["status"]) == (401, "UNAUTHENTICATED")
        both = {"x-api-key": writer, **bearer(mesh.token("someone", "catalog:write"))}
        doubled = edge.post("/v1/products", json=product("both"), headers=both)
        assert doubled.status_code == 403, doubled.text
    with grpc.insecure_channel(mesh.edge_url.removeprefix("http://")) as channel:
        stub = catalog_grpc.CatalogServiceStub(channel)
        made_over_grpc = stub.CreateProduct(
            catalog_pb.CreateProductRequest(
                product=catalog_pb.Product(
                    name="keyed-grpc",
                    category="books",
                    price=money_pb2.Money(currency_code="EUR", units=3),
                    weight_grams=300,
                )
            ),
            metadata=[("x-api-key", writer)],
            timeout=10,
        )
    assert made_over_grpc.product.id


def test_a_key_of_a_plan_the_edge_does_not_have_is_refused(mesh: RunningMesh) -> None:
    known = new_key(mesh).key
    unknown = new_key(mesh, plan="gold").key
    with httpx.Client(base_url=mesh.edge_url, timeout=10) as edge:
        wait_for_deny_list(edge, known)
        refused = edge.get("/v1/products", headers={"x-api-key": unknown})
    assert (refused.status_code, refused.json()["status"]) == (403, "PERMISSION_DENIED")


def test_a_key_past_its_plans_second_gets_429_saying_when_to_come_back(mesh: RunningMesh) -> None:
    key = new_key(mesh).key  # free: 5 a second, bursts of 10
    with httpx.Client(base_url=mesh.edge_url, timeout=10) as edge:
        wait_for_deny_list(edge, key)
        answers = [edge.get("/v1/products", headers={"x-api-key": key}) for _ in range(30)]
    statuses = [a.status_code for a in answers]
    assert set(statuses) == {200, 429}, statuses
    ok = next(a for a in answers if a.status_code == 200)
    assert ok.headers["x-ratelimit-limit"] == "10"
    throttled = next(a for a in answers if a.status_code == 429)
    assert throttled.json()["status"] == "RESOURCE_EXHAUSTED"
    assert throttled.headers["x-ratelimit-remaining"] == "0"
    assert throttled.headers["retry-after"] == throttled.headers["x-ratelimit-reset"]
    assert 1 <= int(throttled.headers["retry-after"]) <= 2


def test_a_key_past_its_days_allowance_gets_429_until_a_call_refills(mesh: RunningMesh) -> None:
    key = new_key(mesh, plan="tiny").key  # 3 a day: a call more every 8 hours
    other = new_key(mesh, plan="tiny").key
    with httpx.Client(base_url=mesh.edge_url, timeout=10) as edge:
        wait_for_deny_list(edge, key)  # takes one call of the day
        answers = [edge.get("/v1/products", headers={"x-api-key": key}) for _ in range(4)]
        others = edge.get("/v1/products", headers={"x-api-key": other})
    assert [a.status_code for a in answers] == [200, 200, 429, 429]
    refused = answers[-1]
    assert refused.json()["status"] == "RESOURCE_EXHAUSTED"
    assert {h: refused.headers[h] for h in ("x-ratelimit-limit", "x-ratelimit-remaining")} == {
        "x-ratelimit-limit": "3",
        "x-ratelimit-remaining": "0",
    }
    assert refused.headers["retry-after"] == refused.headers["x-ratelimit-reset"] == "28800"
    assert "x-shop-quota" not in refused.headers
    assert others.status_code == 200, "one consumer's allowance is not another's"


def test_a_revoked_key_is_refused_within_seconds(mesh: RunningMesh) -> None:
    # standard: 50 a second, so asking every 50 ms until the refusal never empties its
    # bucket (a free key's 5 a second would answer 429 before a slow revocation lands)
    key, key_id, _ = new_key(mesh, "orders:read", plan="standard")
    with httpx.Client(base_url=mesh.edge_url, timeout=10) as edge:
        wait_for_deny_list(edge, key)
        assert edge.get("/v1/orders", headers={"x-api-key": key}).status_code == 200
        asked = time.monotonic()
        mesh.meshctl("keys", "revoke", key_id)
        revoked_at = time.monotonic()
        while edge.get("/v1/orders", headers={"x-api-key": key}).status_code == 200:
            assert time.monotonic() - revoked_at < 10, "the revoked key still works"
            time.sleep(0.05)
        took = time.monotonic() - revoked_at
        refused = edge.get("/v1/orders", headers={"x-api-key": key})
    assert (refused.status_code, refused.json()["status"]) == (403, "PERMISSION_DENIED")
    print(
        f"revoked key refused {took:.2f} s after `meshctl keys revoke` returned, "
        f"{time.monotonic() - asked:.2f} s after it was run"
    )


def test_a_keys_calls_are_logged_and_counted_as_its_consumers(mesh: RunningMesh) -> None:
    key, _, consumer = new_key(mesh)
    with httpx.Client(base_url=mesh.edge_url, timeout=10) as edge:
        wait_for_deny_list(edge, key)
        for _ in range(2):
            assert edge.get("/v1/products", headers={"x-api-key": key}).status_code == 200
    socket = mesh.state()["edge"]["admin_socket"]
    stats = admin_get(socket, "/stats/prometheus?filter=edge_consumers").decode()
    counted = re.search(
        rf'envoy_edge_consumers_requests{{consumer="{consumer}",status="200"}} (\d+)', stats
    )
    assert counted is not None, stats
    assert int(counted[1]) >= 3
    deadline = time.monotonic() + 15
    while True:  # the edge flushes its log every second
        shown = mesh.meshctl("logs", "edge", "--consumer", consumer, "--json").stdout
        lines = [json.loads(line.split("| ", 1)[1]) for line in shown.splitlines()]
        if sum(line["status"] == 200 for line in lines) == int(counted[1]):
            break
        assert time.monotonic() < deadline, shown
        time.sleep(0.5)
    assert {line["consumer"] for line in lines} == {consumer}
    assert key not in shown
