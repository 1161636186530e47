"""The payments composition root: every adapter is chosen here, and only here."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack

from mesh.runtime.eventbus import start_event_bus
from mesh.runtime.runner import Registration
from mesh.runtime.service import ServiceSettings, channel_to, open_database
from services.payments import saga
from services.payments.adapters import MIGRATIONS, GrpcPaymentProvider, SqlPaymentsStore
from services.payments.ports import PaymentProvider, PaymentsStore
from services.payments.servicer import PaymentsServicer
from services.payments.waiting import ChargeRetries
from shop.payments.v1 import payments_service_pb2 as pb
from shop.payments.v1 import payments_service_pb2_grpc as pb_grpc


def registration(store: PaymentsStore, provider: PaymentProvider) -> Registration:
    return Registration.of(PaymentsServicer(store, provider), pb, pb_grpc)


async def bootstrap(settings: ServiceSettings, stack: AsyncExitStack) -> Sequence[Registration]:
    database = await open_database(settings, MIGRATIONS, stack)
    store = SqlPaymentsStore(database)
    provider = GrpcPaymentProvider(channel_to(settings, "processor", stack))
    await start_event_bus(database, settings.nats, stack, saga.handlers(store.within, provider))
    ChargeRetries.start(database, saga.charge_retry(database, store.within, provider), stack)
    return [registration(store, provider)]
