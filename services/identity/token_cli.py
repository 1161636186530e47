"""Mint a development access token, signed with identity's own key (`meshctl token`).

It opens identity's database under the run directory (migrating it when new), loads the
signing key (creating it when there is none, exactly as the service would), and prints
one JWT that the running service's JWKS verifies.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

from mesh.runtime.service import ServiceSettings, SettingsError
from services.identity.adapters import MIGRATIONS, SqlSigningKeyStore
from services.identity.bootstrap import token_settings_from_environment
from services.identity.domain import DEFAULT_SCOPES
from services.identity.handlers import open_signer
from services.identity.tokens import TokenSettings, mint_token


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


async def _mint(
    settings: ServiceSettings, tokens: TokenSettings, subject: str, scopes: Sequence[str], ttl: int
) -> str:
    database = settings.database(MIGRATIONS)
    await database.open()
    try:
        signer = await open_signer(SqlSigningKeyStore(database), tokens)
    finally:
        await database.close()
    return mint_token(signer, subject, scopes, ttl)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        tokens = token_settings_from_environment()
    except SettingsError as error:
        raise SystemExit(f"token: {error}") from None
    parser = argparse.ArgumentParser(prog="meshctl token", description=__doc__)
    parser.add_argument("--run-dir", type=Path, default=Path(os.environ.get("SHOP_RUN_DIR", "run")))
    parser.add_argument("--subject", required=True, help="the token's `sub`, e.g. a user id")
    parser.add_argument(
        "--scope",
        action="append",
        dest="scopes",
        help=f"a scope to grant; repeatable (default: {' '.join(DEFAULT_SCOPES)})",
    )
    parser.add_argument(
        "--ttl",
        type=_positive,
        default=tokens.ttl_seconds,
        help="seconds the token stays valid",
    )
    args = parser.parse_args(argv)
    settings = ServiceSettings(
        name="identity",
        run_dir=args.run_dir,
        database_url=os.environ.get("SHOP_IDENTITY_DATABASE_URL"),
    )
    scopes = args.scopes or list(DEFAULT_SCOPES)
    print(asyncio.run(_mint(settings, tokens, args.subject, scopes, args.ttl)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
