"""Notifications' saga decisions (services.notifications.saga.NOTICES): which
notification each final outcome of an order asks for, without a database."""

from __future__ import annotations

from mesh.runtime.events import new_event, subject
from services.notifications.domain import NotificationKind
from services.notifications.handlers import RecordNotification
from services.notifications.saga import NOTICES
from shop.events.v1 import events_pb2


def test_a_confirmed_order_asks_to_tell_its_customer_so() -> None:
    confirmed = events_pb2.OrderConfirmed(order_id="o1", customer_id="alice")
    notice = NOTICES[subject("orders", "order_confirmed")]
    assert notice(new_event("orders", "o1", confirmed)) == RecordNotification(
        "alice", "o1", NotificationKind.ORDER_CONFIRMED, ""
    )


def test_a_cancelled_order_asks_to_tell_its_customer_why() -> None:
    cancelled = events_pb2.OrderCancelled(
        order_id="o1", customer_id="alice", reason="Payment declined: card_declined"
    )
    notice = NOTICES[subject("orders", "order_cancelled")]
    assert notice(new_event("orders", "o1", cancelled)) == RecordNotification(
        "alice", "o1", NotificationKind.ORDER_CANCELLED, "Payment declined: card_declined"
    )


def test_only_an_orders_final_outcome_asks_for_a_notification() -> None:
    assert sorted(NOTICES) == ["shop.orders.order_cancelled", "shop.orders.order_confirmed"]
