"""Dead letters: the events a consumer gave up on, kept to be looked at and replayed.

A consumer (`mesh.consumer.EventConsumer`) republishes such a message to
`dead.<consumer>` with the reason, the consumer and the original subject in headers and
the original body. `meshctl dlq list/show/replay` reads them from here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from mesh.events import DEAD_CONSUMER, DEAD_LETTER_STREAM, DEAD_REASON, DEAD_SUBJECT, MSG_ID
from shop.events.v1 import events_pb2


@dataclass(frozen=True)
class DeadLetter:
    """A message a consumer gave up on, as the dead-letter stream keeps it."""

    sequence: int
    consumer: str
    subject: str
    reason: str
    time: str
    data: bytes

    def describe(self) -> dict[str, object]:
        """What an operator needs to see, the event decoded where it decodes."""
        try:
            event: object = MessageToDict(events_pb2.EventEnvelope.FromString(self.data))
        except DecodeError:
            event = {"undecodable": self.data[:200].hex()}
        return {
            "sequence": self.sequence,
            "consumer": self.consumer,
            "subject": self.subject,
            "reason": self.reason,
            "time": self.time,
            "event": event,
        }


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
    return DeadLetter(
        sequence=sequence,
        consumer=headers.get(DEAD_CONSUMER, ""),
        subject=headers.get(DEAD_SUBJECT, ""),
        reason=headers.get(DEAD_REASON, ""),
        time=str(message.time or ""),
        data=message.data or b"",
    )


async def replay(js: JetStreamContext, sequence: int) -> DeadLetter:
    """Publish a dead letter again on its original subject, then drop it from the stream.

    Consumers that had applied it already skip it (they remember event ids); the one that
    gave up applies it now, if its cause was fixed. The message id is new, so JetStream's
    duplicate window does not swallow the replay.
    """
    letter = await dead_letter(js, sequence)
    if not letter.subject.startswith("shop."):
        raise ValueError(f"dead letter {sequence} names no event subject ({letter.subject!r})")
    await js.publish(
        letter.subject, letter.data, headers={MSG_ID: f"replay-{sequence}-{uuid.uuid4()}"}
    )
    await js.delete_msg(DEAD_LETTER_STREAM, sequence)
    return letter
