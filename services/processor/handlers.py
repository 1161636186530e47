"""The processor's use case: authorize an amount on a card, once per idempotency key."""

from __future__ import annotations

from dataclasses import dataclass

from mesh.runtime.money import Money
from mesh.runtime.storage import utc_now
from services.processor.domain import (
    Authorization,
    check_request,
    decide,
    fails_transiently,
    idempotency_key_reused,
    processor_unavailable,
)
from services.processor.ports import ProcessorStore


@dataclass(frozen=True)
class Authorize:
    payment_token: str
    amount: Money
    idempotency_key: str


async def authorize(store: ProcessorStore, command: Authorize) -> Authorization:
    """Decide on the card, or repeat the answer already given for the key.

    Everything happens in one write transaction, so concurrent attempts of one key are
    decided once, and exactly one of them is the transient failure of `tok_transient`.
    That failure is committed before it is reported: the retry it asks for must find it.
    """
    check_request(command.payment_token, command.amount, command.idempotency_key)
    async with store.transaction() as tx:
        prior = await tx.find(command.idempotency_key)
        if prior is not None:
            if not prior.answers(command.payment_token, command.amount):
                raise idempotency_key_reused(command.idempotency_key)
            return prior
        authorization: Authorization | None = None
        if fails_transiently(
            command.payment_token, await tx.failed_before(command.idempotency_key)
        ):
            await tx.record_transient_failure(command.idempotency_key, utc_now())
        else:
            authorization = decide(
                payment_token=command.payment_token,
                amount=command.amount,
                idempotency_key=command.idempotency_key,
                now=utc_now(),
            )
            await tx.add(authorization)
    if authorization is None:
        raise processor_unavailable()
    return authorization
