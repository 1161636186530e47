"""Identity's adapters: its SQL tables, the user store and the signing key store.

The signing keys live in identity's own database rather than in a file under the run
directory: they are identity's state just as the users are, so they are backed up and
moved together, they follow `SHOP_IDENTITY_DATABASE_URL` to Postgres where several
replicas must sign with the same key, and the first key is created inside a write
transaction, so replicas starting together agree on one key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from mesh.runtime.storage import Database, Migration, SqlStore, SqlTransaction, UtcDateTime
from services.identity.domain import User, email_taken
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
signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("kid", sa.String(64), primary_key=True),
    sa.Column("private_key_pem", sa.Text, nullable=False),
    sa.Column("create_time", UtcDateTime, nullable=False),
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


class SqlSigningKeyStore:
    """The signing keys, private halves as PEM, in identity's database (see module doc)."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def load_or_create(self, create: Callable[[], SigningKey]) -> list[SigningKey]:
        async with self._database.transaction() as connection:
            rows = list(
                await connection.execute(signing_keys.select().order_by(signing_keys.c.create_time))
            )
            if rows:
                return [SigningKey.from_pem(row.private_key_pem, row.create_time) for row in rows]
            key = create()
            await connection.execute(
                signing_keys.insert().values(
                    kid=key.kid, private_key_pem=key.private_pem(), create_time=key.create_time
                )
            )
            return [key]
