"""API keys over real gRPC, on a real database (SQLite, Postgres), and `meshctl keys`'s
command (`services.identity.keys_cli`) on the same database."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
import sqlalchemy as sa
from google.protobuf import json_format, timestamp_pb2

from mesh.runtime.storage import Database
from services.identity import keys_cli
from services.identity.adapters import MIGRATIONS, api_keys
from shop.identity.v1 import identity_service_pb2 as pb
from tests.services.identity.conftest import identity_on
from tests.support.component import Databases, error_reason, field_violations

pytestmark = pytest.mark.integration

ADMIN = "catalog:write"


def wanted(**fields: Any) -> pb.ApiKey:
    return pb.ApiKey(
        **{"consumer": "acme", "scopes": [ADMIN, "orders:read"], "plan": "free", **fields}
    )


async def create(identity: Any, request_id: str = "", **fields: Any) -> pb.CreateApiKeyResponse:
    request = pb.CreateApiKeyRequest(api_key=wanted(**fields), request_id=request_id)
    response: pb.CreateApiKeyResponse = await identity.CreateApiKey(request)
    return response


async def verified(identity: Any, token: str, audience: str) -> dict[str, Any]:
    """The claims of `token`, verified as the edge verifies: with the published JWKS (the
    JWK its `kid` names) and for one audience."""
    jwks = json_format.MessageToDict(await identity.GetJwks(pb.GetJwksRequest()))
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(key for key in jwks["keys"] if key["kid"] == kid)
    claims: dict[str, Any] = jwt.decode(
        token, jwt.PyJWK(jwk).key, algorithms=[jwk["alg"]], audience=audience,
        issuer="shop-identity",
    )  # fmt: skip
    return claims


async def access_token(identity: Any) -> str:
    email, password = "ada@example.com", "correct horse battery"
    await identity.Register(pb.RegisterRequest(email=email, password=password))
    session = await identity.Login(pb.LoginRequest(email=email, password=password))
    return str(session.access_token)


async def test_a_key_verifies_with_the_jwks_as_a_key_and_never_as_a_token(identity: Any) -> None:
    created = await create(identity)
    claims = await verified(identity, created.key, "shop-api-keys")
    record = created.api_key
    assert jwt.get_unverified_header(created.key)["alg"] == "ES256"
    assert claims["sub"] == "consumer:acme"
    assert (claims["scope"], claims["plan"], claims["jti"]) == (
        f"{ADMIN} orders:read",
        "free",
        record.id,
    )
    assert claims["iat"] == record.create_time.seconds
    assert claims["exp"] == record.expire_time.seconds
    assert record.expire_time.seconds - record.create_time.seconds == 365 * 86400
    with pytest.raises(jwt.InvalidAudienceError):
        await verified(identity, created.key, "shop")
    token = await access_token(identity)
    with pytest.raises(jwt.InvalidAudienceError):
        await verified(identity, token, "shop-api-keys")


async def test_only_a_sha256_is_stored_and_no_list_shows_the_key(
    identity: Any, database: Database
) -> None:
    created = await create(identity)
    async with database.snapshot() as connection:
        [row] = (await connection.execute(sa.select(api_keys))).mappings().all()
    assert created.key not in repr(dict(row))
    assert row["key_sha256"] == hashlib.sha256(created.key.encode()).hexdigest()
    listed = await identity.ListApiKeys(pb.ListApiKeysRequest())
    assert list(listed.api_keys) == [created.api_key]
    assert created.api_key.key_suffix == created.key[-6:]
    shown = listed.SerializeToString().decode("latin-1")
    assert created.key.split(".")[2] not in shown
    assert row["key_sha256"] not in shown


async def test_a_retried_creation_returns_the_same_key(identity: Any) -> None:
    first = await create(identity, request_id="3b0b7c1e-0000-4000-8000-00000000000a")
    again = await create(identity, request_id="3b0b7c1e-0000-4000-8000-00000000000a")
    assert again == first
    listed = await identity.ListApiKeys(pb.ListApiKeysRequest())
    assert len(listed.api_keys) == 1
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await create(identity, request_id="3b0b7c1e-0000-4000-8000-00000000000a", plan="gold")
    assert error_reason(reused.value) == "REQUEST_ID_REUSED"


@pytest.mark.parametrize(
    ("fields", "violations"),
    [
        ({"plan": ""}, ["api_key.plan"]),
        (
            {
                "consumer": "Acme Corp",
                "scopes": [ADMIN, "not a scope"],
                "expire_time": datetime(2020, 1, 1, tzinfo=UTC),
            },
            ["api_key.consumer", "api_key.scopes[1]", "api_key.expire_time"],
        ),
        ({"expire_time": timestamp_pb2.Timestamp(seconds=10**15)}, ["api_key.expire_time"]),
    ],
    ids=["required", "rules", "beyond-any-time"],
)
async def test_a_bad_key_request_names_each_offending_field(
    identity: Any, fields: dict[str, Any], violations: list[str]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await create(identity, **fields)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(refused.value) == violations
    assert list((await identity.ListApiKeys(pb.ListApiKeysRequest())).api_keys) == []


async def test_revoking_is_idempotent_and_an_unknown_key_is_not_found(identity: Any) -> None:
    created = await create(identity)
    first = await identity.RevokeApiKey(pb.RevokeApiKeyRequest(id=created.api_key.id))
    assert first.api_key.HasField("revoke_time")
    again = await identity.RevokeApiKey(pb.RevokeApiKeyRequest(id=created.api_key.id))
    assert again == first
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await identity.RevokeApiKey(pb.RevokeApiKeyRequest(id="0123456789abcdef"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(missing.value) == "API_KEY_NOT_FOUND"


async def test_the_deny_list_pages_through_revoked_keys_only(identity: Any) -> None:
    keys = [(await create(identity, consumer=name)).api_key for name in ("a", "b", "c")]
    for key in keys[:2]:
        await identity.RevokeApiKey(pb.RevokeApiKeyRequest(id=key.id))
    first = await identity.ListRevokedApiKeys(pb.ListRevokedApiKeysRequest(page_size=1))
    rest = await identity.ListRevokedApiKeys(
        pb.ListRevokedApiKeysRequest(page_size=1, page_token=first.next_page_token)
    )
    listed = [*first.revoked_api_keys, *rest.revoked_api_keys]
    assert [k.id for k in listed] == [k.id for k in keys[:2]]
    assert rest.next_page_token == ""
    assert [k.expire_time for k in listed] == [k.expire_time for k in keys[:2]]
    later = pb.ListRevokedApiKeysRequest()
    later.revoked_since.FromDatetime(datetime.now(UTC) + timedelta(minutes=1))
    assert list((await identity.ListRevokedApiKeys(later)).revoked_api_keys) == []


async def test_keys_and_their_signing_key_survive_a_restart(
    databases: Databases, tmp_path: Path
) -> None:
    async with (
        databases.open(tmp_path, "identity", MIGRATIONS) as database,
        identity_on(database) as identity,
    ):
        created = await create(identity)
        jwks = await identity.GetJwks(pb.GetJwksRequest())
    async with (
        databases.open(tmp_path, "identity", MIGRATIONS) as database,
        identity_on(database) as identity,
    ):
        assert await identity.GetJwks(pb.GetJwksRequest()) == jwks
        assert (await verified(identity, created.key, "shop-api-keys"))["jti"] == created.api_key.id
        listed = await identity.ListApiKeys(pb.ListApiKeysRequest(consumer="acme"))
        assert list(listed.api_keys) == [created.api_key]


# `meshctl keys`: identity's command on the same database


async def keys(*argv: str, run_dir: Path) -> int:
    # The command runs its own event loop, as it does from a shell.
    return await asyncio.to_thread(keys_cli.main, ["--run-dir", str(run_dir), *argv])


async def test_the_command_issues_lists_and_revokes_keys_the_service_knows(
    identity: Any, environment: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    create_args = ["create", "--consumer", "acme", "--scope", ADMIN, "--plan", "gold"]
    assert await keys(*create_args, "--expires", "30d", run_dir=tmp_path) == 0
    printed = capsys.readouterr()
    key = printed.out.strip()
    assert "shown this once" in printed.err
    claims = await verified(identity, key, "shop-api-keys")
    assert (claims["sub"], claims["scope"], claims["plan"]) == ("consumer:acme", ADMIN, "gold")
    assert claims["exp"] - claims["iat"] == 30 * 86400
    assert await keys("list", "--json", run_dir=tmp_path) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["id"] == claims["jti"]
    assert key not in json.dumps(listed)
    assert await keys("revoke", claims["jti"], run_dir=tmp_path) == 0
    assert "revoked" in capsys.readouterr().out
    deny = await identity.ListRevokedApiKeys(pb.ListRevokedApiKeysRequest())
    assert [k.id for k in deny.revoked_api_keys] == [claims["jti"]]


async def test_the_command_names_its_options_when_refusing(
    identity: Any, environment: dict[str, str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as refused:
        await keys("create", "--consumer", "Acme", "--plan", "free", run_dir=tmp_path)
    assert str(refused.value.code).startswith("meshctl keys: --consumer: The consumer is")
    with pytest.raises(SystemExit) as missing:
        await keys("revoke", "0123456789abcdef", run_dir=tmp_path)
    assert missing.value.code == "meshctl keys: API key '0123456789abcdef' does not exist"
