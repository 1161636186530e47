"""The recent sagas, from the events of the bus (`mesh.control.sagas`)."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from mesh.control.sagas import sagas_of
from shop.events.v1 import events_pb2


def _event(
    order_id: str, kind: str, at: float, producer: str, **fields: object
) -> events_pb2.EventEnvelope:
    envelope = events_pb2.EventEnvelope(order_id=order_id, producer=producer)
    envelope.occurred_at.CopyFrom(Timestamp(seconds=int(at), nanos=int((at % 1) * 1e9)))
    getattr(envelope, kind).MergeFrom(type(getattr(envelope, kind))(order_id=order_id, **fields))
    return envelope


def test_an_orders_events_are_its_sagas_steps_in_time_order() -> None:
    [saga] = sagas_of(
        [
            _event("o-1", "order_placed", 100.0, "orders"),
            _event("o-1", "payment_captured", 100.3, "payments"),
            _event("o-1", "stock_reserved", 100.1, "inventory"),  # published after, happened before
            _event("o-1", "shipment_scheduled", 100.5, "shipping"),
            _event("o-1", "order_confirmed", 100.6, "orders"),
        ]
    )
    assert [step.event for step in saga.steps] == [
        "order_placed",
        "stock_reserved",
        "payment_captured",
        "shipment_scheduled",
        "order_confirmed",
    ]
    assert saga.status == "CONFIRMED"
    described = saga.describe(now=500.0, stuck_after=30.0)
    assert described["seconds"] == 0.6
    assert described["stuck"] is False


def test_a_rejected_step_says_why_and_the_order_ids_are_not_repeated() -> None:
    [saga] = sagas_of(
        [
            _event("o-2", "order_placed", 10.0, "orders"),
            _event("o-2", "stock_rejected", 10.2, "inventory", reason="too little stock"),
            _event("o-2", "order_cancelled", 10.3, "orders", reason="too little stock"),
        ]
    )
    assert saga.status == "CANCELLED"
    assert saga.steps[1].detail == {"reason": "too little stock"}
    assert all("orderId" not in step.detail for step in saga.steps)


def test_a_saga_pending_past_the_threshold_is_stuck_and_a_younger_one_is_not() -> None:
    old, young = sorted(
        sagas_of(
            [
                _event("o-old", "order_placed", 100.0, "orders"),
                _event("o-young", "order_placed", 190.0, "orders"),
            ]
        ),
        key=lambda saga: saga.started,
    )
    assert old.stuck(now=200.0, after=30.0)
    assert not young.stuck(now=200.0, after=30.0)
    assert old.describe(now=200.0, stuck_after=30.0)["seconds"] == 100.0


def test_the_latest_active_saga_comes_first() -> None:
    found = sagas_of(
        [
            _event("o-a", "order_placed", 1.0, "orders"),
            _event("o-b", "order_placed", 2.0, "orders"),
            _event("o-a", "stock_reserved", 3.0, "inventory"),
        ]
    )
    assert [saga.order_id for saga in found] == ["o-a", "o-b"]


def test_an_event_of_no_order_is_no_step() -> None:
    assert sagas_of([events_pb2.EventEnvelope(order_id="o-1")]) == []
