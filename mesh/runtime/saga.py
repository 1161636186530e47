"""What a saga participant remembers of each order, in its own database.

The saga is a choreography (see `docs/saga.md`): each service reacts to the events it
consumes. Payments and shipping act on an order only after an earlier step succeeded,
but what they need (the amount and card token; the address and weight) is in the
`OrderPlaced` event, so they keep a copy of it as it passes (`remember_placed`).

A cancellation can overtake the step it should stop: the customer cancels while the
payment is under way, or a redelivered `OrderPlaced` arrives after the `OrderCancelled`
that followed it. So a participant also remembers that an order was cancelled
(`remember_cancelled`), before or after it knew anything else of it, and never acts on
a cancelled order again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from mesh.runtime.connection import Connection
from mesh.runtime.consumer import Delivery, Handler
from mesh.runtime.storage import saga_orders, utc_now
from shop.events.v1 import events_pb2


@dataclass(frozen=True)
class SagaOrder:
    """An order as a participant knows it: its placement (if seen yet), and if cancelled."""

    order_id: str
    placed: events_pb2.OrderPlaced | None
    cancelled: bool


#: The statements, built once (see `mesh.runtime.storage`'s note on prepared statements).
_SELECT = saga_orders.select().where(saga_orders.c.order_id == sa.bindparam("order_id"))
_INSERT = saga_orders.insert()
#: `b_order_id` picks the row; the parameters name the columns it sets.
_UPDATE = saga_orders.update().where(saga_orders.c.order_id == sa.bindparam("b_order_id"))


async def saga_order(connection: Connection, order_id: str) -> SagaOrder:
    row = (await connection.execute(_SELECT, {"order_id": order_id})).first()
    if row is None:
        return SagaOrder(order_id, None, cancelled=False)
    placed = events_pb2.OrderPlaced.FromString(row.placed) if row.placed is not None else None
    return SagaOrder(order_id, placed, cancelled=bool(row.cancelled))


async def _upsert(connection: Connection, order_id: str, field: str, value: object) -> None:
    """Set one field of the order's row, made if missing."""
    now = utc_now()
    changed = await connection.execute(
        _UPDATE, {"b_order_id": order_id, field: value, "update_time": now}
    )
    if changed.rowcount == 0:
        row = {"order_id": order_id, "placed": None, "cancelled": False, "update_time": now}
        await connection.execute(_INSERT, {**row, field: value})


async def remember_placed(connection: Connection, placed: events_pb2.OrderPlaced) -> None:
    """Keep `placed` (what the participant needs of it) for the order's later steps."""
    await _upsert(connection, placed.order_id, "placed", placed.SerializeToString())


async def remember_cancelled(connection: Connection, order_id: str) -> SagaOrder:
    """Mark the order cancelled, known or not; return what was known before."""
    before = await saga_order(connection, order_id)
    await _upsert(connection, order_id, "cancelled", True)
    return before


class NotYetPlaced(RuntimeError):
    """A step of an order arrived before its placement did (a redelivered placement);
    the step fails, and redelivery tries it again a little later."""


async def placed_order(
    connection: Connection, order_id: str
) -> tuple[events_pb2.OrderPlaced, bool]:
    """The order's placement, which must have been seen (else `NotYetPlaced`), and
    whether the order was cancelled since."""
    order = await saga_order(connection, order_id)
    if order.placed is None:
        raise NotYetPlaced(f"order {order_id} has not been placed (yet)")
    return order.placed, order.cancelled


def remember_placements(*, without: Sequence[str] = ()) -> Handler:
    """The handler of `order_placed` for a participant that acts later: keep the
    placement, less the fields named in `without` (what is none of its business)."""

    async def remember(delivery: Delivery) -> None:
        placed = events_pb2.OrderPlaced()
        placed.CopyFrom(delivery.envelope.order_placed)
        for name in without:
            placed.ClearField(name)
        async with delivery.transaction() as connection:
            await remember_placed(connection, placed)

    return remember
