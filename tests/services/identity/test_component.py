"""Identity over real gRPC, on a real database (SQLite, Postgres)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
import sqlalchemy as sa
from google.protobuf import json_format

from mesh.runtime.caller import SUBJECT_METADATA_KEY
from mesh.runtime.storage import Database
from services.identity import keys_cli, token_cli
from services.identity.adapters import (
    MIGRATIONS,
    api_key_signing_keys,
    api_keys,
    signing_keys,
    users,
)
from shop.identity.v1 import identity_service_pb2 as pb
from tests.services.identity.conftest import identity_on
from tests.support.component import Databases, error_reason, field_violations

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"


async def register(identity: Any, email: str = "ada@example.com", **fields: Any) -> pb.User:
    response = await identity.Register(
        pb.RegisterRequest(email=email, password=fields.pop("password", PASSWORD), **fields)
    )
    user: pb.User = response.user
    return user


async def verified_claims(identity: Any, token: str) -> dict[str, Any]:
    """The claims of `token`, verified as another service would: with the published JWKS."""
    jwks = json_format.MessageToDict(await identity.GetJwks(pb.GetJwksRequest()))
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(key for key in jwks["keys"] if key["kid"] == kid)
    claims: dict[str, Any] = jwt.decode(
        token,
        jwt.PyJWK(jwk).key,
        algorithms=["RS256"],
        audience="shop",
        issuer="shop-identity",
        options={"require": ["sub", "scope", "iss", "aud", "iat", "exp", "jti"]},
    )
    return claims


async def test_register_then_login_gives_a_token_the_jwks_verifies(identity: Any) -> None:
    user = await register(identity, email="  Ada@Example.COM ", display_name="Ada Lovelace")
    assert user.email == "ada@example.com"
    assert list(user.scopes) == ["orders:read", "orders:write", "catalog:read"]
    assert len(user.id) == 36
    assert user.create_time.seconds > 0

    session = await identity.Login(pb.LoginRequest(email="ADA@example.com", password=PASSWORD))
    assert session.token_type == "Bearer"
    assert session.expires_in_seconds == 3600
    assert session.user == user
    claims = await verified_claims(identity, session.access_token)
    assert claims["sub"] == user.id
    assert claims["scope"] == "orders:read orders:write catalog:read"
    assert (claims["iss"], claims["aud"]) == ("shop-identity", "shop")
    assert claims["exp"] - claims["iat"] == 3600


async def test_the_jwks_is_a_standard_signature_key_set_tokens_key_first(identity: Any) -> None:
    jwks = json_format.MessageToDict(await identity.GetJwks(pb.GetJwksRequest()))
    # The access tokens' RSA key, then the API keys' elliptic-curve key.
    [key, api_key_key] = jwks["keys"]
    assert set(key) == {"kty", "kid", "use", "alg", "n", "e"}
    assert (key["kty"], key["use"], key["alg"], key["e"]) == ("RSA", "sig", "RS256", "AQAB")
    assert "=" not in key["n"]
    assert jwt.PyJWK(key).key.key_size == 2048
    assert set(api_key_key) == {"kty", "kid", "use", "alg", "crv", "x", "y"}
    assert (api_key_key["kty"], api_key_key["crv"], api_key_key["alg"]) == ("EC", "P-256", "ES256")
    assert len(api_key_key["x"]) == len(api_key_key["y"]) == 43  # 32 bytes, unpadded
    assert jwt.PyJWK(api_key_key).key.curve.name == "secp256r1"
    assert api_key_key["kid"] != key["kid"]


async def test_wrong_password_and_unknown_email_are_refused_alike(identity: Any) -> None:
    await register(identity)
    failures = []
    for email, password in [("ada@example.com", "not my password"), ("bob@example.com", PASSWORD)]:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await identity.Login(pb.LoginRequest(email=email, password=password))
        failures.append(
            (failure.value.code(), error_reason(failure.value), failure.value.details())
        )
    assert failures[0] == failures[1]
    assert failures[0][:2] == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")


async def test_an_email_taken_in_any_case_is_refused(identity: Any) -> None:
    await register(identity, email="ada@example.com")
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await register(identity, email="ADA@example.com", password="another password")
    assert failure.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(failure.value) == "EMAIL_TAKEN"


@pytest.mark.parametrize(
    ("email", "password", "violations"),
    [
        ("ada.example.com", PASSWORD, ["email"]),
        ("ada@example", PASSWORD, ["email"]),
        ("ada@example.com", "1234567", ["password"]),
        ("not an email", "short", ["email", "password"]),
        ("", PASSWORD, ["email"]),
    ],
    ids=["no-at", "no-domain-dot", "short-password", "both", "missing-email"],
)
async def test_invalid_registrations_name_the_offending_fields(
    identity: Any, email: str, password: str, violations: list[str]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await register(identity, email=email, password=password)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(failure.value) == violations


async def test_a_retried_registration_returns_the_first_user(identity: Any) -> None:
    request_id = "3b0b7c1e-0000-4000-8000-000000000001"
    first = await register(identity, request_id=request_id)
    again = await register(identity, request_id=request_id)
    assert again == first
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await register(identity, request_id="3b0b7c1e-0000-4000-8000-000000000002")
    assert failure.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_only_a_scrypt_hash_of_the_password_is_stored(
    identity: Any, database: Database
) -> None:
    user = await register(identity)
    async with database.snapshot() as connection:
        stored = (
            await connection.execute(sa.select(users.c.password_hash).where(users.c.id == user.id))
        ).scalar_one()
    assert stored != PASSWORD
    assert PASSWORD not in stored
    assert stored.startswith("scrypt$")


async def test_the_current_user_is_the_caller_named_in_metadata(identity: Any) -> None:
    user = await register(identity)
    response = await identity.GetCurrentUser(
        pb.GetCurrentUserRequest(), metadata=((SUBJECT_METADATA_KEY, user.id),)
    )
    assert response.user == user


async def test_the_current_user_needs_a_caller(identity: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await identity.GetCurrentUser(pb.GetCurrentUserRequest())
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_the_current_user_of_a_vanished_account_is_not_found(identity: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await identity.GetCurrentUser(
            pb.GetCurrentUserRequest(),
            metadata=((SUBJECT_METADATA_KEY, "0f1e0e3c-2f5e-4f7f-8a4c-1c3c2b1a0000"),),
        )
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(failure.value) == "USER_NOT_FOUND"


async def test_the_key_and_the_accounts_survive_a_restart(
    databases: Databases, tmp_path: Path
) -> None:
    async with (
        databases.open(tmp_path, "identity", MIGRATIONS) as database,
        identity_on(database) as identity,
    ):
        user = await register(identity)
        before = await identity.Login(pb.LoginRequest(email=user.email, password=PASSWORD))
        jwks_before = await identity.GetJwks(pb.GetJwksRequest())
    async with databases.open(tmp_path, "identity", MIGRATIONS) as database:
        assert await database.applied_versions() == [1, 2]
        async with identity_on(database) as identity:
            assert await identity.GetJwks(pb.GetJwksRequest()) == jwks_before
            claims = await verified_claims(identity, before.access_token)
            assert claims["sub"] == user.id
            after = await identity.Login(pb.LoginRequest(email=user.email, password=PASSWORD))
            assert after.user == user


async def test_concurrent_registrations_of_one_email_create_one_account(identity: Any) -> None:
    outcomes = await asyncio.gather(
        *(register(identity, password=f"password-{i}") for i in range(5)),
        return_exceptions=True,
    )
    created = [o for o in outcomes if isinstance(o, pb.User)]
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(created) == 1
    assert [error_reason(e) for e in refused] == ["EMAIL_TAKEN"] * 4


async def test_token_cli_prints_a_token_the_service_jwks_verifies(
    databases: Databases,
    environment: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--run-dir", str(tmp_path), "--subject", "admin", "--ttl", "120"]
    argv += ["--scope", "catalog:write", "--scope", "orders:read"]
    # The service stores its signing key when it starts; the command signs with that key.
    async with (
        databases.open(tmp_path, "identity", MIGRATIONS) as database,
        identity_on(database) as identity,
    ):
        # The command runs its own event loop, as it does from a shell.
        assert await asyncio.to_thread(token_cli.main, argv) == 0
        token = capsys.readouterr().out.strip()
        claims = await verified_claims(identity, token)
    assert claims["sub"] == "admin"
    assert claims["scope"] == "catalog:write orders:read"
    assert claims["exp"] - claims["iat"] == 120


@pytest.mark.parametrize(
    ("command", "argv", "refusal", "tables"),
    [
        (token_cli.main, ["--subject", "admin"], "meshctl token: no signing key of identity",
         [signing_keys]),
        (keys_cli.main, ["create", "--consumer", "acme", "--plan", "free"],
         "meshctl keys: identity has not started", [signing_keys, api_key_signing_keys, api_keys]),
    ],
    ids=["token", "keys"],
)  # fmt: skip
async def test_a_command_refuses_before_the_service_stored_a_key_and_makes_none(
    databases: Databases,
    environment: dict[str, str],
    tmp_path: Path,
    command: Callable[[list[str]], int],
    argv: list[str],
    refusal: str,
    tables: list[sa.Table],
) -> None:
    with pytest.raises(SystemExit) as refused:
        await asyncio.to_thread(command, ["--run-dir", str(tmp_path), *argv])
    # A database URL may hold a password: the message names the variable instead.
    where = "SHOP_IDENTITY_DATABASE_URL" if environment else tmp_path
    assert refused.value.code == (
        f"{refusal} in {where}: start the mesh (`meshctl up`), or pass the --run-dir of a "
        "running one"
    )
    async with (
        databases.open(tmp_path, "identity", MIGRATIONS) as database,
        database.snapshot() as connection,
    ):
        for table in tables:
            stored = await connection.execute(sa.select(sa.func.count()).select_from(table))
            assert stored.scalar_one() == 0
