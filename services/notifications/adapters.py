"""The notifications adapters: its SQL table and store."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from mesh.runtime.storage import (
    Database,
    Migration,
    SqlStore,
    SqlTransaction,
    UtcDateTime,
    keyset_page,
)
from services.notifications.domain import Notification, NotificationChannel, NotificationKind

MIGRATIONS = (
    Migration(
        1,
        "notifications",
        [
            """
            CREATE TABLE notifications (
                id VARCHAR(36) PRIMARY KEY,
                customer_id VARCHAR(64) NOT NULL CHECK (length(customer_id) > 0),
                order_id VARCHAR(64) NOT NULL CHECK (length(order_id) > 0),
                kind VARCHAR(32) NOT NULL
                    CHECK (kind IN ('ORDER_CONFIRMED', 'ORDER_CANCELLED')),
                channel VARCHAR(16) NOT NULL CHECK (channel IN ('EMAIL')),
                subject VARCHAR(200) NOT NULL CHECK (length(subject) > 0),
                body TEXT NOT NULL,
                create_time TIMESTAMP NOT NULL,
                CONSTRAINT one_notification_per_outcome UNIQUE (order_id, kind)
            )
            """,
            """
            CREATE INDEX notifications_by_customer
                ON notifications (customer_id, create_time, id)
            """,
        ],
    ),
)

metadata = sa.MetaData()
notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("customer_id", sa.String(64), nullable=False),
    sa.Column("order_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("subject", sa.String(200), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("create_time", UtcDateTime, nullable=False),
)


def _row(notification: Notification) -> dict[str, Any]:
    return {
        "id": notification.id,
        "customer_id": notification.customer_id,
        "order_id": notification.order_id,
        "kind": notification.kind.value,
        "channel": notification.channel.value,
        "subject": notification.subject,
        "body": notification.body,
        "create_time": notification.create_time,
    }


def _notification(row: sa.Row[Any]) -> Notification:
    return Notification(
        id=row.id,
        customer_id=row.customer_id,
        order_id=row.order_id,
        kind=NotificationKind(row.kind),
        channel=NotificationChannel(row.channel),
        subject=row.subject,
        body=row.body,
        create_time=row.create_time,
    )


#: The statements of a saga's outcome, built once (see `mesh.runtime.storage`'s note on that).
_FIND = notifications.select().where(
    notifications.c.order_id == sa.bindparam("order_id"),
    notifications.c.kind == sa.bindparam("kind"),
)
_ADD = notifications.insert()


class SqlNotificationsTransaction(SqlTransaction):
    """The notifications table, inside one transaction."""

    async def find(self, order_id: str, kind: NotificationKind) -> Notification | None:
        found = await self._connection.execute(_FIND, {"order_id": order_id, "kind": kind.value})
        row = found.first()
        return None if row is None else _notification(row)

    async def add(self, notification: Notification) -> None:
        await self._connection.execute(_ADD, _row(notification))

    async def page(
        self, customer_id: str, before: tuple[datetime, str] | None, limit: int
    ) -> list[Notification]:
        query = keyset_page(notifications, before, limit, newest_first=True).where(
            notifications.c.customer_id == customer_id
        )
        return [_notification(row) for row in await self._connection.execute(query)]


class SqlNotificationsStore(SqlStore[SqlNotificationsTransaction]):
    """The notifications database."""

    def __init__(self, database: Database) -> None:
        super().__init__(database, SqlNotificationsTransaction)
