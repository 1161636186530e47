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
from collections.abc import Sequence

from mesh.runtime.service import ServiceSettings, SettingsError
from services.identity import commands
from services.identity.adapters import SqlSigningKeyStore
from services.identity.bootstrap import token_settings_from_environment
from services.identity.domain import DEFAULT_SCOPES
from services.identity.tokens import TokenSettings, TokenSigner, mint_token


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


async def _mint(
    settings: ServiceSettings, tokens: TokenSettings, subject: str, scopes: Sequence[str], ttl: int
) -> str:
    async with commands.identity_database(settings) as database:
        keys = await SqlSigningKeyStore(database).load_or_create(commands.refuse_new_key)
    return mint_token(TokenSigner(keys, tokens.issuer, tokens.audience), subject, scopes, ttl)


def _parser(tokens: TokenSettings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshctl token", description=__doc__)
    commands.add_run_dir(parser, "signs")
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
    settings = commands.settings_of(args.run_dir)
    scopes = args.scopes or list(DEFAULT_SCOPES)
    try:
        token = asyncio.run(_mint(settings, tokens, args.subject, scopes, args.ttl))
    except commands.NotStarted:
        raise commands.not_started(
            "meshctl token", settings, "no signing key of identity"
        ) from None
    print(token)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
