"""Dead letters: the events a consumer gave up on, and the events an outbox parked.

A consumer (`mesh.runtime.consumer.EventConsumer`) republishes a message it gives up on to
`dead.<consumer>`, with the reason, the original subject and where the event is kept in
`SHOP_EVENTS` in headers, and the original body. A relay (`mesh.runtime.events.OutboxRelay`)
reports an event it parked on `dead.<producer>.outbox`, with the reason and the event's
id and subject and no body: the event never reached the bus and stays in the producer's
outbox. `meshctl dlq list/show/replay` reads them from here.

Only the subject of a dead letter is trusted: NATS lets each service publish on its own
dead-letter subjects only (`mesh.control.natsconf`), so the subject names who wrote it, whatever
its headers say. A replay publishes the event as `SHOP_EVENTS` keeps it, not the dead
letter's body, and only after checking that it is the event the letter names, that the
consumer who wrote the letter takes its subject, and that its producer owns that
subject; anything else is refused (`ReplayRefused`).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from mesh.runtime.events import (
    DEAD_EVENT_ID,
    DEAD_LETTER_PREFIX,
    DEAD_LETTER_STREAM,
    DEAD_REASON,
    DEAD_SEQUENCE,
    DEAD_SUBJECT,
    EVENTS_STREAM,
    MSG_ID,
    PARKED,
    NatsSettings,
)
from mesh.runtime.storage import event_subject, subject_filter
from shop.events.v1 import events_pb2

T = TypeVar("T")


class ReplayRefused(ValueError):
    """A dead letter that is not replayed: the reason says why."""


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter as the dead-letter stream keeps it.

    `consumer` is the consumer that gave up on the event, `producer` the service whose
    outbox parked it (one of the two is set, from the letter's subject); `subject`,
    `reason`, `event_sequence` and `event_id` are what the writer says of the event.
    """

    sequence: int
    consumer: str
    subject: str
    reason: str
    time: str
    data: bytes
    producer: str = ""
    event_sequence: int | None = None
    event_id: str = ""

    def describe(self) -> dict[str, object]:
        """What an operator needs to see, the event decoded where it decodes."""
        described: dict[str, object] = {
            "sequence": self.sequence,
            "consumer": self.consumer,
            "subject": self.subject,
            "reason": self.reason,
            "time": self.time,
        }
        if self.producer:
            return described | {"parked_by": self.producer, "event_id": self.event_id}
        try:
            event: object = MessageToDict(events_pb2.EventEnvelope.FromString(self.data))
        except DecodeError:
            event = {"undecodable": self.data[:200].hex()}
        return described | {"event_sequence": self.event_sequence, "event": event}


def _writer(subject: str) -> tuple[str, str]:
    """(consumer, producer) of a dead letter, from its subject: `dead.<consumer>` or
    `dead.<producer>.outbox`; neither for any other subject."""
    parts = subject.split(".")
    if len(parts) == 2 and parts[0] == DEAD_LETTER_PREFIX:
        return parts[1], ""
    if len(parts) == 3 and parts[0] == DEAD_LETTER_PREFIX and parts[2] == PARKED:
        return "", parts[1]
    return "", ""


def _sequence(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


async def dead_letters(js: JetStreamContext) -> list[DeadLetter]:
    """Every dead letter still kept, oldest first."""
    state = (await js.stream_info(DEAD_LETTER_STREAM)).state
    found = []
    for sequence in range(state.first_seq, state.last_seq + 1) if state.messages else ():
        try:
            found.append(await dead_letter(js, sequence))
        except NotFoundError:
            continue  # replayed (deleted) since
    return found


async def dead_letter(js: JetStreamContext, sequence: int) -> DeadLetter:
    message = await js.get_msg(DEAD_LETTER_STREAM, sequence)
    headers = message.headers or {}
    consumer, producer = _writer(message.subject or "")
    return DeadLetter(
        sequence=sequence,
        consumer=consumer,
        subject=headers.get(DEAD_SUBJECT, ""),
        reason=headers.get(DEAD_REASON, ""),
        time=str(message.time or ""),
        data=message.data or b"",
        producer=producer,
        event_sequence=_sequence(headers.get(DEAD_SEQUENCE)),
        event_id=headers.get(DEAD_EVENT_ID, ""),
    )


async def _consumed(js: JetStreamContext, consumer: str) -> set[str]:
    """The subjects the durable consumer `consumer` takes."""
    try:
        config = (await js.consumer_info(EVENTS_STREAM, consumer)).config
    except NotFoundError:
        return set()
    return set(config.filter_subjects or ([config.filter_subject] if config.filter_subject else []))


def _owned(data: bytes, subject: str) -> bool:
    """Whether `data` is an event whose producer owns `subject`."""
    try:
        return event_subject(events_pb2.EventEnvelope.FromString(data)) == subject
    except (DecodeError, ValueError):
        return False


async def verified_event(js: JetStreamContext, letter: DeadLetter) -> tuple[str, bytes]:
    """The subject and body of the event `letter` names, as `SHOP_EVENTS` keeps them;
    `ReplayRefused` unless the letter holds up (see the module doc)."""
    where = f"dead letter {letter.sequence}"
    if letter.producer:
        raise ReplayRefused(
            f"{where}: event {letter.event_id} was parked in the outbox of "
            f"{letter.producer} and never reached the bus: {letter.reason}"
        )
    if not letter.consumer:
        raise ReplayRefused(f"{where} was not written by a consumer")
    if letter.event_sequence is None:
        raise ReplayRefused(f"{where} names no event of {EVENTS_STREAM}")
    try:
        event = await js.get_msg(EVENTS_STREAM, letter.event_sequence)
    except NotFoundError:
        raise ReplayRefused(
            f"{where}: event {letter.event_sequence} is no longer kept in {EVENTS_STREAM}"
        ) from None
    subject, data = event.subject or "", event.data or b""
    if subject != letter.subject or data != letter.data:
        raise ReplayRefused(f"{where} is not event {letter.event_sequence} of {EVENTS_STREAM}")
    if subject_filter(subject) not in await _consumed(js, letter.consumer):
        raise ReplayRefused(f"{where}: consumer {letter.consumer} does not take {subject}")
    if not _owned(data, subject):
        raise ReplayRefused(f"{where}: the event's producer does not own {subject}")
    return subject, data


async def replay(js: JetStreamContext, sequence: int) -> DeadLetter:
    """Publish the event of a dead letter again on its subject, then drop the letter.

    Consumers that had applied it already skip it (they remember event ids); the one that
    gave up applies it now, if its cause was fixed. The message id is new, so JetStream's
    duplicate window does not swallow the replay. `ReplayRefused` leaves the letter.
    """
    letter = await dead_letter(js, sequence)
    subject, data = await verified_event(js, letter)
    await js.publish(subject, data, headers={MSG_ID: f"replay-{sequence}-{uuid.uuid4()}"})
    await js.delete_msg(DEAD_LETTER_STREAM, sequence)
    return letter


@dataclass(frozen=True)
class Replayed:
    """What became of one dead letter in `replay_all`: replayed, or left and why."""

    letter: DeadLetter
    refused: str = ""


async def replay_all(js: JetStreamContext) -> list[Replayed]:
    """Replay every dead letter that holds up; each other one is left, with the reason."""
    outcomes = []
    for letter in await dead_letters(js):
        try:
            await replay(js, letter.sequence)
        except ReplayRefused as refusal:
            outcomes.append(Replayed(letter, str(refusal)))
        else:
            outcomes.append(Replayed(letter))
    return outcomes


async def with_jetstream(
    settings: NatsSettings, work: Callable[[JetStreamContext], Awaitable[T]]
) -> T:
    """Run `work` on a JetStream connection of `settings` (the mesh's administrator's)."""
    client = await settings.connect(max_reconnect_attempts=1, connect_timeout=5)
    try:
        return await work(client.jetstream())
    finally:
        await client.close()
