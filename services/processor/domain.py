"""The processor's domain: card authorizations, decided by the card token, once per key."""

from __future__ import annotations

import enum
import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime

from mesh.runtime.errors import FailedPrecondition, FieldViolation, InvalidArgument, Unavailable
from mesh.runtime.money import Money

#: The test tokens the processor knows (see the contract).
VISA_TOKEN = "tok_visa"
DECLINED_TOKEN = "tok_declined"
TRANSIENT_TOKEN = "tok_transient"
KNOWN_TOKENS = (VISA_TOKEN, DECLINED_TOKEN, TRANSIENT_TOKEN)

#: The decline reason of `tok_declined`.
CARD_DECLINED = "card_declined"

#: The longest idempotency key the processor keeps (its column's width).
MAX_IDEMPOTENCY_KEY_LENGTH = 128


class Decision(enum.Enum):
    """What the processor decided; the values are what the database stores."""

    APPROVED = "APPROVED"
    DECLINED = "DECLINED"


@dataclass(frozen=True)
class Authorization:
    """The processor's answer for one idempotency key, given once and repeated after."""

    id: str
    idempotency_key: str
    token_fingerprint: str
    amount: Money
    decision: Decision
    decline_reason: str
    create_time: datetime

    def answers(self, payment_token: str, amount: Money) -> bool:
        """Whether a request for `amount` on `payment_token` is the one this answered."""
        return self.token_fingerprint == fingerprint(payment_token) and self.amount == amount


def fingerprint(payment_token: str) -> str:
    """What the processor keeps of a token: enough to recognize it, not the token itself."""
    return hashlib.sha256(payment_token.encode()).hexdigest()


def check_request(payment_token: str, amount: Money, idempotency_key: str) -> None:
    """Refuse, naming every offending field, a request the processor cannot decide on."""
    problems = []
    if payment_token not in KNOWN_TOKENS:
        problems.append(
            FieldViolation(
                "payment_token", f"Unknown payment token; use {', '.join(KNOWN_TOKENS)}."
            )
        )
    if amount.minor_units <= 0:
        problems.append(FieldViolation("amount", "The amount must be positive."))
    if not (
        0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_LENGTH and idempotency_key.isprintable()
    ):
        problems.append(
            FieldViolation(
                "idempotency_key",
                f"The idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable "
                "characters.",
            )
        )
    if problems:
        raise InvalidArgument.of(problems)


def fails_transiently(payment_token: str, failed_before: bool) -> bool:
    """Whether this attempt fails without a decision: the first one of `tok_transient`."""
    return payment_token == TRANSIENT_TOKEN and not failed_before


def decide(
    *, payment_token: str, amount: Money, idempotency_key: str, now: datetime
) -> Authorization:
    """The processor's answer to a known token, decided by the token alone."""
    declined = payment_token == DECLINED_TOKEN
    return Authorization(
        id=str(uuid.uuid4()),
        idempotency_key=idempotency_key,
        token_fingerprint=fingerprint(payment_token),
        amount=amount,
        decision=Decision.DECLINED if declined else Decision.APPROVED,
        decline_reason=CARD_DECLINED if declined else "",
        create_time=now,
    )


def processor_unavailable() -> Unavailable:
    return Unavailable(
        "the card processor is temporarily unavailable; retry with the same idempotency_key",
        reason="PROVIDER_UNAVAILABLE",
    )


def idempotency_key_reused(idempotency_key: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"idempotency_key {idempotency_key!r} was already used for another authorization; "
        "send a new one",
        reason="IDEMPOTENCY_KEY_REUSED",
        metadata={"idempotency_key": idempotency_key},
    )
