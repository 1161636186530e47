"""Notifications' domain: what the shop tells a customer when an order is settled."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from mesh.runtime.errors import FieldViolation, InvalidArgument


class NotificationKind(Enum):
    """The final outcomes of an order; a customer is told about each one exactly once."""

    ORDER_CONFIRMED = "ORDER_CONFIRMED"
    ORDER_CANCELLED = "ORDER_CANCELLED"


class NotificationChannel(Enum):
    EMAIL = "EMAIL"


@dataclass(frozen=True)
class Notification:
    """One message the shop sent to a customer about an order."""

    id: str
    customer_id: str
    order_id: str
    kind: NotificationKind
    channel: NotificationChannel
    subject: str
    body: str
    create_time: datetime


def _message(kind: NotificationKind, order_id: str, reason: str) -> tuple[str, str]:
    """The subject and body that tell a customer about an order's outcome."""
    if kind is NotificationKind.ORDER_CONFIRMED:
        return (
            f"Your order {order_id} is confirmed",
            f"Thank you! We have received the payment for order {order_id} and will ship it soon.",
        )
    because = f" because {reason.strip().rstrip('.')}" if reason.strip() else ""
    return (
        f"Your order {order_id} was cancelled",
        f"We are sorry: order {order_id} was cancelled{because}. You have not been charged.",
    )


def compose_notification(
    *, customer_id: str, order_id: str, kind: NotificationKind, reason: str, now: datetime
) -> Notification:
    """The email that tells `customer_id` what became of `order_id`."""
    problems = [
        FieldViolation(name, f"The {name} is required.", "REQUIRED")
        for name, value in (("customer_id", customer_id), ("order_id", order_id))
        if not value.strip()
    ]
    if problems:
        raise InvalidArgument.of(problems)
    subject, body = _message(kind, order_id, reason)
    return Notification(
        id=str(uuid.uuid4()),
        customer_id=customer_id,
        order_id=order_id,
        kind=kind,
        channel=NotificationChannel.EMAIL,
        subject=subject,
        body=body,
        create_time=now,
    )
