"""Identity's adapters: its SQL tables, the user store, the API key store and the stores
of the signing keys (of access tokens, and of API keys).

The signing keys live in identity's own database rather than in a file under the run
directory: they are identity's state just as the users are, so they are backed up and
moved together, they follow `SHOP_IDENTITY_DATABASE_URL` to Postgres where several
replicas must sign with the same key, and the first key is created inside a write
transaction, so replicas starting together agree on one key.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

import sqlalchemy as sa

from mesh.runtime.storage import (
    Database,
    Migration,
    SqlStore,
    SqlTransaction,
    UtcDateTime,
    keyset_page,
)
from services.identity.api_key_tokens import ApiKeySigningKey
from services.identity.api_keys import ApiKey, ApiKeyGrant
from services.identity.domain import User, email_taken
from services.identity.ports import Cursor
from services.identity.tokens import SigningKey

MIGRATIONS = (
    Migration(
        1,
        "users and signing keys",
        [
            """
            CREATE TABLE users (
                id VARCHAR(36) PRIMARY KEY,
                email VARCHAR(254) NOT NULL UNIQUE
                    CHECK (email = lower(email) AND email LIKE '%_@_%'),
                display_name VARCHAR(200) NOT NULL,
                password_hash TEXT NOT NULL CHECK (password_hash LIKE 'scrypt$%'),
                scopes TEXT NOT NULL,
                create_time TIMESTAMP NOT NULL
            )
            """,
            """
            CREATE TABLE signing_keys (
                kid VARCHAR(64) PRIMARY KEY,
                private_key_pem TEXT NOT NULL,
                create_time TIMESTAMP NOT NULL
            )
            """,
        ],
    ),
    Migration(
        2,
        "API keys: their records (never the keys) and the keys that sign them",
        [
            """
            CREATE TABLE api_key_signing_keys (
                kid VARCHAR(64) PRIMARY KEY,
                private_key_pem TEXT NOT NULL,
                create_time TIMESTAMP NOT NULL
            )
            """,
            """
            CREATE TABLE api_keys (
                id VARCHAR(32) PRIMARY KEY,
                consumer VARCHAR(48) NOT NULL,
                scopes TEXT NOT NULL,
                plan VARCHAR(32) NOT NULL,
                kid VARCHAR(64) NOT NULL REFERENCES api_key_signing_keys (kid),
                key_sha256 VARCHAR(64) NOT NULL UNIQUE CHECK (length(key_sha256) = 64),
                key_suffix VARCHAR(16) NOT NULL,
                create_time TIMESTAMP NOT NULL,
                expire_time TIMESTAMP NOT NULL CHECK (expire_time > create_time),
                revoke_time TIMESTAMP
            )
            """,
            "CREATE INDEX api_keys_by_consumer ON api_keys (consumer, create_time, id)",
            "CREATE INDEX api_keys_by_time ON api_keys (create_time, id)",
        ],
    ),
)

metadata = sa.MetaData()
users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("email", sa.String(254), nullable=False, unique=True),
    sa.Column("display_name", sa.String(200), nullable=False),
    sa.Column("password_hash", sa.Text, nullable=False),
    # Space-separated, as in a token's `scope` claim (a scope never contains a space).
    sa.Column("scopes", sa.Text, nullable=False),
    sa.Column("create_time", UtcDateTime, nullable=False),
)


def _signing_key_table(name: str) -> sa.Table:
    """A table of signing keys: each one's id, its private half as PEM, when it was made."""
    return sa.Table(
        name,
        metadata,
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("private_key_pem", sa.Text, nullable=False),
        sa.Column("create_time", UtcDateTime, nullable=False),
    )


#: The keys of access tokens, and those of API keys.
signing_keys = _signing_key_table("signing_keys")
api_key_signing_keys = _signing_key_table("api_key_signing_keys")
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("consumer", sa.String(48), nullable=False),
    # Space-separated, as in the key's `scope` claim.
    sa.Column("scopes", sa.Text, nullable=False),
    sa.Column("plan", sa.String(32), nullable=False),
    sa.Column("kid", sa.String(64), nullable=False),
    # The key's SHA-256, never the key: identity can tell a key it is shown, and check
    # that a retried CreateApiKey signs the very key it issued.
    sa.Column("key_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("key_suffix", sa.String(16), nullable=False),
    sa.Column("create_time", UtcDateTime, nullable=False),
    sa.Column("expire_time", UtcDateTime, nullable=False),
    sa.Column("revoke_time", UtcDateTime),
)


def _row(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "display_name": user.display_name,
        "password_hash": user.password_hash,
        "scopes": " ".join(user.scopes),
        "create_time": user.create_time,
    }


def _user(row: sa.Row[Any]) -> User:
    return User(
        id=row.id,
        email=row.email,
        display_name=row.display_name,
        scopes=tuple(row.scopes.split()),
        create_time=row.create_time,
        password_hash=row.password_hash,
    )


class SqlIdentityTransaction(SqlTransaction):
    """The users table, inside one transaction."""

    async def get(self, user_id: str) -> User | None:
        row = (await self._connection.execute(users.select().where(users.c.id == user_id))).first()
        return None if row is None else _user(row)

    async def get_by_email(self, email: str) -> User | None:
        row = (await self._connection.execute(users.select().where(users.c.email == email))).first()
        return None if row is None else _user(row)

    async def add(self, user: User) -> None:
        try:
            await self._connection.execute(users.insert().values(_row(user)))
        except sa.exc.IntegrityError as error:
            # Only a registration outside `Database.transaction`'s write lock (which every
            # backend takes) gets past the handler's check; the UNIQUE constraint turns
            # it away.
            raise email_taken(user.email) from error


class SqlIdentityStore(SqlStore[SqlIdentityTransaction]):
    """Identity's database of users."""

    def __init__(self, database: Database) -> None:
        super().__init__(database, SqlIdentityTransaction)


def _api_key_row(key: ApiKey) -> dict[str, Any]:
    grant = key.grant
    return {
        "id": grant.id,
        "consumer": grant.consumer,
        "scopes": " ".join(grant.scopes),
        "plan": grant.plan,
        "kid": key.kid,
        "key_sha256": key.key_sha256,
        "key_suffix": key.key_suffix,
        "create_time": grant.create_time,
        "expire_time": grant.expire_time,
        "revoke_time": key.revoke_time,
    }


def _api_key(row: sa.Row[Any]) -> ApiKey:
    grant = ApiKeyGrant(
        id=row.id,
        consumer=row.consumer,
        scopes=tuple(row.scopes.split()),
        plan=row.plan,
        create_time=row.create_time,
        expire_time=row.expire_time,
    )
    return ApiKey(grant, row.kid, row.key_sha256, row.key_suffix, row.revoke_time)


#: Built once (see the note on statements in `mesh.runtime.storage`).
_GET_API_KEY = api_keys.select().where(api_keys.c.id == sa.bindparam("id"))
_ADD_API_KEY = api_keys.insert()
_REVOKE_API_KEY = (
    api_keys.update()
    .where(api_keys.c.id == sa.bindparam("key_id"), api_keys.c.revoke_time.is_(None))
    .values(revoke_time=sa.bindparam("when"))
)


class SqlApiKeyTransaction(SqlTransaction):
    """The API keys table, inside one transaction."""

    async def get(self, key_id: str) -> ApiKey | None:
        row = (await self._connection.execute(_GET_API_KEY, {"id": key_id})).first()
        return None if row is None else _api_key(row)

    async def add(self, key: ApiKey) -> None:
        await self._connection.execute(_ADD_API_KEY, _api_key_row(key))

    async def revoke(self, key_id: str, when: datetime) -> None:
        # Conditional: the first revocation's time stays, whoever writes.
        await self._connection.execute(_REVOKE_API_KEY, {"key_id": key_id, "when": when})

    async def page(self, consumer: str, before: Cursor | None, limit: int) -> list[ApiKey]:
        query = keyset_page(api_keys, before, limit, newest_first=True)
        if consumer:
            query = query.where(api_keys.c.consumer == consumer)
        return [_api_key(row) for row in await self._connection.execute(query)]

    async def revoked_page(
        self, since: datetime | None, now: datetime, after: Cursor | None, limit: int
    ) -> list[ApiKey]:
        query = keyset_page(api_keys, after, limit, newest_first=False).where(
            api_keys.c.revoke_time.is_not(None),
            api_keys.c.expire_time > sa.literal(now, UtcDateTime),
        )
        if since is not None:
            query = query.where(api_keys.c.revoke_time >= sa.literal(since, UtcDateTime))
        return [_api_key(row) for row in await self._connection.execute(query)]


class SqlApiKeyStore(SqlStore[SqlApiKeyTransaction]):
    """Identity's database of API keys (the same database as its users')."""

    def __init__(self, database: Database) -> None:
        super().__init__(database, SqlApiKeyTransaction)


class _StoredKey(Protocol):
    @property
    def kid(self) -> str: ...
    @property
    def create_time(self) -> datetime: ...
    def private_pem(self) -> str: ...


Key = TypeVar("Key", bound=_StoredKey)


class _SqlKeyStore(Generic[Key]):
    """Signing keys, private halves as PEM, in a table of identity's database (see the
    module doc); the first one is made in a write transaction, so replicas agree on it."""

    def __init__(
        self, database: Database, table: sa.Table, load: Callable[[str, datetime], Key]
    ) -> None:
        self._database = database
        self._table = table
        self._load = load

    async def load_or_create(self, create: Callable[[], Key]) -> list[Key]:
        table = self._table
        async with self._database.transaction() as connection:
            rows = list(await connection.execute(table.select().order_by(table.c.create_time)))
            if rows:
                return [self._load(row.private_key_pem, row.create_time) for row in rows]
            key = create()
            await connection.execute(
                table.insert().values(
                    kid=key.kid, private_key_pem=key.private_pem(), create_time=key.create_time
                )
            )
            return [key]


class SqlSigningKeyStore(_SqlKeyStore[SigningKey]):
    """The keys that sign access tokens."""

    def __init__(self, database: Database) -> None:
        super().__init__(database, signing_keys, SigningKey.from_pem)


class SqlApiKeySigningKeyStore(_SqlKeyStore[ApiKeySigningKey]):
    """The keys that sign API keys."""

    def __init__(self, database: Database) -> None:
        super().__init__(database, api_key_signing_keys, ApiKeySigningKey.from_pem)
