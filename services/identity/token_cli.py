"""Mint a development access token, signed with identity's own key (`meshctl token`).

It opens identity's database under the run directory, loads the signing keys the service
stored there, and prints one JWT that the running service's JWKS verifies. It never
creates a key: the service creates the first one when it starts, and a token signed with
any other key would be refused by the mesh. So with no key yet (no mesh has started from
that run directory), it says so and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

from mesh.runtime.service import ServiceSettings, SettingsError, sqlite_path
from services.identity.adapters import MIGRATIONS, SqlSigningKeyStore
from services.identity.bootstrap import token_settings_from_environment
from services.identity.domain import DEFAULT_SCOPES
from services.identity.tokens import SigningKey, TokenSettings, TokenSigner, mint_token

NAME = "identity"


class NoSigningKey(RuntimeError):
    """Identity has not stored a signing key in this run directory."""


def _no_new_key() -> SigningKey:
    raise NoSigningKey


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


async def _mint(
    settings: ServiceSettings, tokens: TokenSettings, subject: str, scopes: Sequence[str], ttl: int
) -> str:
    # Opening a SQLite database creates it: look for identity's file first.
    if not settings.database_url and not sqlite_path(settings.run_dir, NAME).is_file():
        raise NoSigningKey
    database = settings.database(MIGRATIONS)
    await database.open()
    try:
        keys = await SqlSigningKeyStore(database).load_or_create(_no_new_key)
    finally:
        await database.close()
    return mint_token(TokenSigner(keys, tokens.issuer, tokens.audience), subject, scopes, ttl)


def _parser(tokens: TokenSettings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshctl token", description=__doc__)
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=Path(os.environ.get("SHOP_RUN_DIR", "run")),
        help="the run directory of the mesh whose identity signs (meshctl: default .mesh)",
    )
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        tokens = token_settings_from_environment()
    except SettingsError as error:
        raise SystemExit(f"meshctl token: {error}") from None
    args = _parser(tokens).parse_args(argv)
    settings = ServiceSettings(
        name=NAME,
        run_dir=args.run_dir,
        database_url=os.environ.get("SHOP_IDENTITY_DATABASE_URL"),
    )
    scopes = args.scopes or list(DEFAULT_SCOPES)
    try:
        token = asyncio.run(_mint(settings, tokens, args.subject, scopes, args.ttl))
    except NoSigningKey:
        # The URL may carry a password: name the variable, not its value.
        where = "SHOP_IDENTITY_DATABASE_URL" if settings.database_url else args.run_dir
        raise SystemExit(
            f"meshctl token: no signing key of identity in {where}: start the mesh "
            "(`meshctl up`), or pass the --run-dir of a running one"
        ) from None
    print(token)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
