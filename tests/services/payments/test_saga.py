"""Payments' saga handlers (services.payments.saga) on a real database, with a fake processor."""

from __future__ import annotations

from google.protobuf.message import Message

from mesh.runtime.events import new_event, subject
from mesh.runtime.money import Money
from mesh.runtime.storage import Database
from services.payments import handlers as payment_handlers
from services.payments import saga
from services.payments.adapters import SqlPaymentsStore
from services.payments.domain import Approved, PaymentStatus, ProviderDecision
from shop.events.v1 import events_pb2
from tests.support.component import OneDelivery


class ApprovingProvider:
    """Approves every authorization."""

    async def authorize(
        self, payment_token: str, amount: Money, idempotency_key: str
    ) -> ProviderDecision:
        return Approved()


async def deliver(
    database: Database, store: SqlPaymentsStore, producer: str, event: str, payload: Message
) -> None:
    """Hand `payload`, as `producer`'s `event` about order o-1, to payments' handler of it."""
    handle = saga.handlers(store.within, ApprovingProvider())[subject(producer, event)]
    await handle(OneDelivery(database, new_event(producer, "o-1", payload)))  # type: ignore[arg-type]


async def test_the_saga_charges_the_customer_who_placed_the_order(database: Database) -> None:
    store = SqlPaymentsStore(database)
    placed = events_pb2.OrderPlaced(
        order_id="o-1",
        customer_id="alice",
        total=Money("EUR", 2500).to_proto(),
        payment_token="tok_visa",
    )
    await deliver(database, store, "orders", "order_placed", placed)
    await deliver(database, store, "inventory", "stock_reserved", events_pb2.StockReserved())

    payment = await payment_handlers.authorized_payment(store, "order-o-1")
    assert payment is not None
    assert payment.customer_id == "alice"
    assert payment.status is PaymentStatus.CAPTURED
    assert await payment_handlers.get_payment(store, "alice", payment.id) == payment
