"""Identity's composition root: every adapter and setting is chosen here, and only here.

Token settings come from the environment:

| setting | environment | default |
| --- | --- | --- |
| `iss` claim | `SHOP_IDENTITY_ISSUER` | `shop-identity` |
| `aud` claim | `SHOP_IDENTITY_AUDIENCE` | `shop` |
| token lifetime, seconds | `SHOP_IDENTITY_TOKEN_TTL` | 3600 |
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack

from mesh.runtime.runner import Registration
from mesh.runtime.service import ServiceSettings, SettingsError, open_database
from services.identity.adapters import MIGRATIONS, SqlIdentityStore, SqlSigningKeyStore
from services.identity.handlers import open_signer
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
    return TokenSettings(
        issuer=environ.get("SHOP_IDENTITY_ISSUER", "").strip() or defaults.issuer,
        audience=environ.get("SHOP_IDENTITY_AUDIENCE", "").strip() or defaults.audience,
        ttl_seconds=ttl,
    )


def registration(store: IdentityStore, signer: TokenSigner, token_ttl_seconds: int) -> Registration:
    return Registration.of(IdentityServicer(store, signer, token_ttl_seconds), pb, pb_grpc)


async def bootstrap(settings: ServiceSettings, stack: AsyncExitStack) -> Sequence[Registration]:
    tokens = token_settings_from_environment()
    database = await open_database(settings, MIGRATIONS, stack)
    signer = await open_signer(SqlSigningKeyStore(database), tokens)
    return [registration(SqlIdentityStore(database), signer, tokens.ttl_seconds)]
