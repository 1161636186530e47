"""API keys on a running mesh: `meshctl keys create|list|revoke` works on the database of
the identity that `up` started, whose JWKS (as the edge serves it) verifies the keys,
whose internal deny list has the revocations at once, and whose REST methods at the edge
share the same keys. (The edge accepting `x-api-key` is not built yet.)"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import pytest

from mesh.control.binaries import find_binary
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
