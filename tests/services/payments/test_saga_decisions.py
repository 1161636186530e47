"""Payments' saga decisions (services.payments.saga): what to authorize, how to settle an
authorization, what to refund, and the events that report them, on plain values,
without a database or a processor."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mesh.runtime.events import new_event
from mesh.runtime.money import Money
from services.payments.domain import (
    Approved,
    Declined,
    Payment,
    ProviderDecision,
    captured,
    new_payment,
    refunded,
    voided,
)
from services.payments.handlers import CapturePayment, RefundPayment
from services.payments.saga import (
    Capture,
    Decline,
    Void,
    authorization_of,
    capture_reported,
    refund_due,
    refund_reason,
    refund_reported,
    settlement,
)
from shop.events.v1 import events_pb2

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
APPROVED = Approved()


def payment(decision: ProviderDecision = APPROVED) -> Payment:
    return new_payment(
        order_id="o1", customer_id="alice", amount=Money("EUR", 2500), decision=decision, now=NOW
    )


def placed() -> events_pb2.OrderPlaced:
    return events_pb2.OrderPlaced(
        order_id="o1",
        customer_id="alice",
        total=Money("EUR", 2500).to_proto(),
        payment_token="tok_visa",
    )


def test_reserved_stock_asks_for_the_order_total_on_the_customers_card_once() -> None:
    command = authorization_of("o1", placed(), cancelled=False)
    assert command is not None
    assert (command.order_id, command.customer_id) == ("o1", "alice")
    assert (command.amount, command.payment_token) == (Money("EUR", 2500), "tok_visa")
    assert command.request_id == "order-o1"


def test_a_cancelled_order_is_never_charged() -> None:
    assert authorization_of("o1", placed(), cancelled=True) is None


def test_an_approved_authorization_is_captured() -> None:
    approved = payment()
    assert settlement("o1", approved, cancelled=False) == Capture(
        CapturePayment(approved.id, "capture-o1")
    )


def test_a_redelivered_charge_captures_with_the_same_request_so_only_once() -> None:
    first = payment()
    again = captured(first, NOW)
    assert settlement("o1", again, cancelled=False) == settlement("o1", first, cancelled=False)


def test_an_authorization_the_order_was_cancelled_during_is_voided_without_an_event() -> None:
    approved = payment()
    assert settlement("o1", approved, cancelled=True) == Void(
        RefundPayment(approved.id, None, "order cancelled", "")
    )


@pytest.mark.parametrize("cancelled", [False, True])
def test_a_declined_card_is_reported_with_the_providers_reason(cancelled: bool) -> None:
    step = settlement("o1", payment(Declined("card_declined")), cancelled)
    assert isinstance(step, Decline)
    assert (step.event.order_id, step.event.reason) == ("o1", "card_declined")


def test_a_capture_is_reported_with_the_payment_and_the_amount_taken() -> None:
    taken = captured(payment(), NOW)
    reported = capture_reported("o1", taken)
    assert (reported.order_id, reported.payment_id) == ("o1", taken.id)
    assert Money.from_proto(reported.amount) == Money("EUR", 2500)


def test_the_refund_names_the_event_that_asked_for_it() -> None:
    failed = new_event("shipping", "o1", events_pb2.ShipmentFailed(reason="too heavy"))
    cancelled = new_event("orders", "o1", events_pb2.OrderCancelled(reason="changed my mind"))
    assert refund_reason(failed) == "shipment failed: too heavy"
    assert refund_reason(cancelled) == "order cancelled: changed my mind"


def test_captured_money_is_due_back_once_per_order() -> None:
    taken = captured(payment(), NOW)
    due = refund_due("o1", taken, "order cancelled: changed my mind")
    assert due is not None
    assert due.payment == taken
    assert due.command == RefundPayment(
        taken.id, None, "order cancelled: changed my mind", "refund-o1"
    )


@pytest.mark.parametrize(
    "before",
    [
        None,
        payment(),
        payment(Declined("card_declined")),
        voided(payment(), NOW),
        refunded(captured(payment(), NOW), None, NOW),
    ],
    ids=["never authorized", "authorized", "declined", "voided", "refunded before"],
)
def test_nothing_is_due_back_unless_money_was_taken_and_kept(before: Payment | None) -> None:
    assert refund_due("o1", before, "shipment failed: too heavy") is None


def test_a_refund_is_reported_with_the_money_it_gave_back_and_why() -> None:
    taken = captured(payment(), NOW)
    due = refund_due("o1", taken, "shipment failed: too heavy")
    assert due is not None
    reported = refund_reported("o1", due, refunded(taken, None, NOW))
    assert (reported.order_id, reported.payment_id) == ("o1", taken.id)
    assert Money.from_proto(reported.amount) == Money("EUR", 2500)
    assert reported.reason == "shipment failed: too heavy"
