"""Identity's composition root: every adapter and setting is chosen here, and only here.

Token settings come from the environment:

| setting | environment | default |
| --- | --- | --- |
| `iss` claim | `SHOP_IDENTITY_ISSUER` | `shop-identity` |
| `aud` claim | `SHOP_IDENTITY_AUDIENCE` | `shop` |
| token lifetime, seconds | `SHOP_IDENTITY_TOKEN_TTL` | 3600 |
| API keys' `aud` claim (not the tokens') | `SHOP_IDENTITY_API_KEY_AUDIENCE` | `shop-api-keys` |
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack

from mesh.runtime.runner import Registration
from mesh.runtime.service import ServiceSettings, SettingsError, open_database
from mesh.runtime.storage import Database
from services.identity.adapters import (
    MIGRATIONS,
    SqlApiKeySigningKeyStore,
    SqlApiKeyStore,
    SqlIdentityStore,
    SqlSigningKeyStore,
)
from services.identity.handlers import ApiKeyIssuer, open_api_key_signer, open_signer
from services.identity.ports import IdentityStore
from services.identity.servicer import IdentityServicer
from services.identity.tokens import TokenSettings, TokenSigner
from shop.identity.v1 import identity_service_pb2 as pb
from shop.identity.v1 import identity_service_pb2_grpc as pb_grpc


def token_settings_from_environment(environ: Mapping[str, str] = os.environ) -> TokenSettings:
    """The token settings; a malformed lifetime fails fast, naming the variable."""
    defaults = TokenSettings()
    ttl_text = environ.get("SHOP_IDENTITY_TOKEN_TTL", "").strip()
    try:
        ttl = int(ttl_text) if ttl_text else defaults.ttl_seconds
    except ValueError:
        ttl = 0
    if ttl <= 0:
        raise SettingsError(
            f"SHOP_IDENTITY_TOKEN_TTL must be a positive number of seconds, not {ttl_text!r}"
        )
    tokens = TokenSettings(
        issuer=environ.get("SHOP_IDENTITY_ISSUER", "").strip() or defaults.issuer,
        audience=environ.get("SHOP_IDENTITY_AUDIENCE", "").strip() or defaults.audience,
        ttl_seconds=ttl,
        api_key_audience=environ.get("SHOP_IDENTITY_API_KEY_AUDIENCE", "").strip()
        or defaults.api_key_audience,
    )
    if tokens.api_key_audience == tokens.audience:
        # Then an API key would pass as an access token, and the other way round.
        raise SettingsError(
            "SHOP_IDENTITY_API_KEY_AUDIENCE must differ from the tokens' audience "
            f"({tokens.audience!r})"
        )
    return tokens


def registration(
    store: IdentityStore,
    signer: TokenSigner,
    token_ttl_seconds: int,
    api_keys: ApiKeyIssuer,
) -> Registration:
    servicer = IdentityServicer(store, signer, token_ttl_seconds, api_keys)
    return Registration.of(servicer, pb, pb_grpc)


async def open_api_key_issuer(database: Database, tokens: TokenSettings) -> ApiKeyIssuer:
    """The API keys' store and signer on identity's database."""
    signer = await open_api_key_signer(SqlApiKeySigningKeyStore(database), tokens)
    return ApiKeyIssuer(SqlApiKeyStore(database), signer)


async def bootstrap(settings: ServiceSettings, stack: AsyncExitStack) -> Sequence[Registration]:
    tokens = token_settings_from_environment()
    database = await open_database(settings, MIGRATIONS, stack)
    signer = await open_signer(SqlSigningKeyStore(database), tokens)
    api_keys = await open_api_key_issuer(database, tokens)
    return [registration(SqlIdentityStore(database), signer, tokens.ttl_seconds, api_keys)]
