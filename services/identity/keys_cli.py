"""Issue, list and revoke API keys for machine consumers (`meshctl keys`).

It works on identity's database in the run directory, whether the mesh is running or not,
through the use cases behind identity's RPCs, so a key follows the same rules whichever
way it is made. A key is signed with the key the service stored and publishes in its
JWKS, so nothing is issued before the service has started there. A revocation is in the
database at once; the edge's deny list follows it within seconds (`ListRevokedApiKeys`).

  meshctl keys create --consumer acme --scope catalog:write --plan free [--expires 90d]
  meshctl keys list [--consumer acme] [--json]
  meshctl keys revoke KEY_ID

`create` prints the key on stdout, once: identity keeps only its SHA-256.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from google.protobuf import json_format

from mesh.runtime.errors import InvalidArgument, ServiceError
from mesh.runtime.service import ServiceSettings, SettingsError
from mesh.runtime.storage import Database, utc_now
from services.identity import commands, handlers
from services.identity.adapters import SqlApiKeySigningKeyStore, SqlApiKeyStore
from services.identity.api_key_tokens import ApiKeySigner
from services.identity.api_keys import ApiKey
from services.identity.bootstrap import token_settings_from_environment
from services.identity.servicer import api_key_to_proto
from services.identity.tokens import TokenSettings

PROG = "meshctl keys"
#: The option of each field a rule may name.
_OPTIONS = {
    "consumer": "--consumer",
    "scopes": "--scope",
    "plan": "--plan",
    "expire_time": "--expires",
}
_DAYS = re.compile(r"(\d{1,4})d")


def _expiry(text: str) -> datetime | timedelta:
    """`90d` (days from now), or a date or time in ISO 8601 (UTC unless it says)."""
    if days := _DAYS.fullmatch(text):
        return timedelta(days=int(days[1]))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("give days (90d) or a date (2027-01-31)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands.add_run_dir(parser, "keeps the keys")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="issue a key; it is printed this once")
    create.add_argument("--consumer", required=True, help="who holds the key, e.g. acme")
    create.add_argument(
        "--scope",
        action="append",
        dest="scopes",
        default=[],
        metavar="SCOPE",
        help="repeatable: catalog:write",
    )
    create.add_argument("--plan", required=True, help="the quota plan at the edge, e.g. free")
    create.add_argument(
        "--expires", type=_expiry, help="90d, or a date or time (UTC); default: in a year"
    )
    listing = actions.add_parser("list", help="the keys issued, newest first; never a key")
    listing.add_argument("--consumer", default="", help="only this consumer's keys")
    revoke = actions.add_parser(
        "revoke", help="revoke a key, at once (the edge reads revocations from identity)"
    )
    revoke.add_argument("key_id", metavar="KEY_ID")
    for action in (create, listing, revoke):
        action.add_argument("--json", action="store_true", help="print JSON, as the REST API")
    return parser


def _as_json(record: ApiKey) -> dict[str, object]:
    return json_format.MessageToDict(api_key_to_proto(record))


def _moment(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%MZ") if value else "-"


def _row(record: ApiKey) -> list[str]:
    grant = record.grant
    times = map(_moment, (grant.create_time, grant.expire_time, record.revoke_time))
    scopes = " ".join(grant.scopes) or "-"
    return [grant.id, grant.consumer, grant.plan, scopes, f"...{record.key_suffix}", *times]


def _print_table(records: Sequence[ApiKey]) -> None:
    header = ["ID", "CONSUMER", "PLAN", "SCOPES", "KEY", "CREATED", "EXPIRES", "REVOKED"]
    rows = [header, *map(_row, records)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


async def _create(database: Database, tokens: TokenSettings, args: argparse.Namespace) -> int:
    signing_keys = await SqlApiKeySigningKeyStore(database).load_or_create(commands.refuse_new_key)
    signer = ApiKeySigner(signing_keys, tokens.issuer, tokens.api_key_audience)
    expiry = args.expires
    expire_time = utc_now() + expiry if isinstance(expiry, timedelta) else expiry
    command = handlers.CreateApiKey(
        args.consumer, tuple(args.scopes), args.plan, expire_time, request_id=""
    )
    issued = await handlers.create_api_key(SqlApiKeyStore(database), signer, command)
    record = issued.record
    if args.json:
        print(json.dumps({"apiKey": _as_json(record), "key": issued.key}, indent=2))
    else:
        print(issued.key)
    print(
        f"API key {record.id} for {record.grant.consumer} (plan {record.grant.plan}), "
        f"expires {_moment(record.grant.expire_time)}.\n"
        "It is shown this once: identity keeps only its SHA-256. Store it now.",
        file=sys.stderr,
    )
    return 0


async def _list(database: Database, args: argparse.Namespace) -> int:
    store, records, token = SqlApiKeyStore(database), [], ""
    while True:
        query = handlers.ListApiKeys(args.consumer, page_size=0, page_token=token)
        page = await handlers.list_api_keys(store, query)
        records += page.keys
        if not (token := page.next_page_token):
            break
    if args.json:
        print(json.dumps([_as_json(record) for record in records], indent=2))
    else:
        _print_table(records)
    return 0


async def _revoke(database: Database, args: argparse.Namespace) -> int:
    command = handlers.RevokeApiKey(args.key_id, request_id="")
    record = await handlers.revoke_api_key(SqlApiKeyStore(database), command)
    if args.json:
        print(json.dumps(_as_json(record), indent=2))
    else:
        print(
            f"API key {record.id} of {record.grant.consumer}: revoked {_moment(record.revoke_time)}"
        )
    return 0


async def _run(settings: ServiceSettings, tokens: TokenSettings, args: argparse.Namespace) -> int:
    async with commands.identity_database(settings) as database:
        if args.action == "create":
            return await _create(database, tokens, args)
        if args.action == "list":
            return await _list(database, args)
        return await _revoke(database, args)


def _option_of(field: str) -> str:
    """The option a field of `CreateApiKeyRequest` is given with: `api_key.plan` -> `--plan`."""
    name = field.removeprefix("api_key.").split("[")[0]
    return _OPTIONS.get(name, field)


def _refusal(error: ServiceError) -> str:
    if isinstance(error, InvalidArgument):
        named = error.renamed(_option_of)
        return "\n".join(f"{PROG}: {v.field}: {v.description}" for v in named.violations)
    return f"{PROG}: {error.message}"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        tokens = token_settings_from_environment()
    except SettingsError as error:
        raise SystemExit(f"{PROG}: {error}") from None
    args = _parser().parse_args(argv)
    settings = commands.settings_of(args.run_dir)
    try:
        return asyncio.run(_run(settings, tokens, args))
    except commands.NotStarted:
        raise commands.not_started(PROG, settings, "identity has not started") from None
    except ServiceError as error:
        raise SystemExit(_refusal(error)) from None


if __name__ == "__main__":
    raise SystemExit(main())
