"""The whole shop in one process, for the contract tests: every service's real servicer and
event handlers, each on its own SQLite file, the calls between them over real gRPC, and a
courier in place of NATS that hands each event in a service's outbox to every service
that handles it.

A courier rather than a nats-server because what the contracts are about is what each
consumer is handed, and the courier (with the consumers' channels) can hand a consumer
only the fields its contract declares (`Handing`), which a real bus cannot; the bus
itself is tested in tests/integration. Everything else is the services' own code, so the
events a provider publishes here are the ones its flows publish in the mesh.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import grpc
import sqlalchemy as sa
from google.protobuf import field_mask_pb2, json_format
from google.protobuf.message import Message
from google.type import money_pb2, postal_address_pb2

from mesh.runtime.caller import SUBJECT_METADATA_KEY
from mesh.runtime.consumer import Delivery, Handler
from mesh.runtime.events import subject
from mesh.runtime.runner import Registration, ServiceRunner
from mesh.runtime.storage import Database, Migration
from mesh.runtime.storage.schema import metadata as mesh_tables
from mesh.tools.consumer_contracts import Contract, given_to, only
from services.catalog import adapters as catalog_adapters
from services.catalog.bootstrap import registrations as catalog_registrations
from services.inventory import adapters as inventory_adapters
from services.inventory import saga as inventory_saga
from services.inventory.bootstrap import registration as inventory_registration
from services.notifications import adapters as notifications_adapters
from services.notifications import saga as notifications_saga
from services.orders import adapters as orders_adapters
from services.orders import saga as orders_saga
from services.orders.bootstrap import registration as orders_registration
from services.payments import adapters as payments_adapters
from services.payments import saga as payments_saga
from services.processor import adapters as processor_adapters
from services.processor.bootstrap import registration as processor_registration
from services.search import adapters as search_adapters
from services.search import projection as search_projection
from services.search.handlers import SemanticIndex, open_read_model
from services.shipping import adapters as shipping_adapters
from services.shipping import saga as shipping_saga
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc
from shop.events.v1 import events_pb2
from shop.orders.v1 import orders_service_pb2 as orders_pb
from shop.orders.v1 import orders_service_pb2_grpc as orders_grpc
from tests.support.component import EVERY_CALL, OneDelivery, sqlite_database

ALICE = ((SUBJECT_METADATA_KEY, "alice"),)
#: Every field of an address that a customer may give, filled in, so that a consumer
#: reading one its contract does not declare is handed a difference it would show.
HOME = postal_address_pb2.PostalAddress(
    region_code="DE",
    language_code="de",
    postal_code="10115",
    sorting_code="B1",
    administrative_area="Berlin",
    locality="Berlin",
    sublocality="Mitte",
    address_lines=["Hauptstr. 1", "Hinterhaus"],
    recipients=["Alice Example"],
    organization="Example GmbH",
)
#: An address orders takes and the carrier finds no door at, when shipping books the parcel
#: (`services.shipping.domain.UNDELIVERABLE_POSTAL_CODE`).
UNDELIVERABLE = postal_address_pb2.PostalAddress(
    region_code="AT", postal_code="00000", address_lines=["Nowhere 1"]
)

#: A value of the outcome by where it is: `orders/order_history[3].detail`.
Outcome = dict[str, object]


class Handing:
    """What each consumer is handed of the events and answers meant for it: all of them,
    or, for the one `contract` under test, only what that contract declares. It counts
    what it cut down, by event and by method, and keeps every request each consumer sent,
    by method."""

    def __init__(self, contract: Contract | None = None) -> None:
        self.contract = contract
        self.cut: Counter[str] = Counter()
        self.requests: defaultdict[tuple[str, str], list[Message]] = defaultdict(list)

    def _under_test(self, consumer: str, provider: str) -> bool:
        contract = self.contract
        return contract is not None and (contract.consumer, contract.provider) == (
            consumer,
            provider,
        )

    def event(self, consumer: str, envelope: events_pb2.EventEnvelope) -> events_pb2.EventEnvelope:
        if self.contract is None or not self._under_test(consumer, envelope.producer):
            return envelope
        consumed = self.contract.consumed(envelope.WhichOneof("payload") or "")
        if consumed is None:
            return envelope
        self.cut[consumed.name] += 1
        return given_to(consumed, envelope)

    def response(self, consumer: str, grpc_path: str, response: Message) -> Message:
        provider = grpc_path.split(".")[1]  # /shop.<provider>.<version>.<Service>/<Method>
        if self.contract is None or not self._under_test(consumer, provider):
            return response
        paths = self.contract.response_paths(grpc_path)
        if paths is None:
            return response
        self.cut[grpc_path] += 1
        return only(response, paths)


class _HandedAnswers(grpc.aio.UnaryUnaryClientInterceptor):
    """A consumer's channel: keeps the requests it sends, and hands it the answers as
    `handing` says."""

    def __init__(self, consumer: str, handing: Handing) -> None:
        self._consumer = consumer
        self._handing = handing

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        method = client_call_details.method
        path = method.decode() if isinstance(method, bytes) else str(method)
        self._handing.requests[(self._consumer, path)].append(request)
        response = await (await continuation(client_call_details, request))
        return self._handing.response(self._consumer, path, response)


@dataclass(frozen=True)
class Participant:
    """A service of the shop: its database, and its handler of each subject it consumes."""

    name: str
    database: Database
    handlers: Mapping[str, Handler] = field(default_factory=dict)


class HandlerFailed(AssertionError):
    """A consumer's handler raised on an event the courier handed it."""


#: A participant's outbox rows after the last one taken, in the order they were written.
_WRITTEN_AFTER = sa.text("SELECT rowid, payload FROM outbox WHERE rowid > :taken ORDER BY rowid")


class Courier:
    """Hands each event written to a participant's outbox to every participant that
    handles its subject, as `handing` says, in the order the events were written, until no
    event is left; keeps every event it took (`published`)."""

    def __init__(self, participants: Sequence[Participant], handing: Handing) -> None:
        self._participants = participants
        self._handing = handing
        self._taken = dict.fromkeys((p.name for p in participants), 0)
        self.published: list[events_pb2.EventEnvelope] = []

    async def deliver_all(self) -> None:
        while events := await self._new_events():
            for envelope in events:
                await self._deliver(envelope)

    async def _new_events(self) -> list[events_pb2.EventEnvelope]:
        events = []
        for participant in self._participants:
            async with participant.database.snapshot() as connection:
                rows = await connection.execute(
                    _WRITTEN_AFTER, {"taken": self._taken[participant.name]}
                )
                for row in rows:
                    events.append(events_pb2.EventEnvelope.FromString(row.payload))
                    self._taken[participant.name] = row.rowid
        self.published += events
        return events

    async def _deliver(self, envelope: events_pb2.EventEnvelope) -> None:
        name = subject(envelope.producer, envelope.WhichOneof("payload") or "")
        for participant in self._participants:
            handler = participant.handlers.get(name)
            if handler is None:
                continue
            handed = self._handing.event(participant.name, envelope)
            try:
                await handler(cast(Delivery, OneDelivery(participant.database, handed)))
            except Exception as error:
                raise HandlerFailed(
                    f"{participant.name} failed on {name} (event {envelope.event_id}): {error!r}"
                ) from error


@dataclass(frozen=True)
class Shop:
    """The running shop: its client-facing stubs, its participants and its courier."""

    catalog: Any
    orders: Any
    participants: Sequence[Participant]
    courier: Courier


class _Assembly:
    """What a service of the shop is built with: its database under `directory`, its
    server, and channels that hand it what `handing` says; all closed with `stack`."""

    def __init__(self, stack: AsyncExitStack, directory: Path, handing: Handing) -> None:
        self._stack = stack
        self._directory = directory
        self._handing = handing

    async def database(self, name: str, migrations: Sequence[Migration]) -> Database:
        opened = sqlite_database(self._directory, name, migrations)
        return await self._stack.enter_async_context(opened)

    async def serve(self, *registrations: Registration) -> str:
        """The address of a server of `registrations` (`tests.support.component.serving`
        gives a channel; here each consumer needs one of its own)."""
        runner = ServiceRunner(registrations, port=0, grace=1.0, limits=EVERY_CALL)
        await runner.start()
        self._stack.push_async_callback(runner.stop, 0)
        return runner.address

    async def channel(self, consumer: str, address: str) -> grpc.aio.Channel:
        """`consumer`'s channel to the server at `address`."""
        interceptors = [_HandedAnswers(consumer, self._handing)]
        opened = grpc.aio.insecure_channel(address, interceptors=interceptors)
        return await self._stack.enter_async_context(opened)


async def _inventory(shop: _Assembly) -> tuple[Participant, str]:
    database = await shop.database("inventory", inventory_adapters.MIGRATIONS)
    store = inventory_adapters.SqlInventoryStore(database)
    served = await shop.serve(inventory_registration(store))
    return Participant("inventory", database, inventory_saga.handlers(store.within)), served


async def _processor(shop: _Assembly) -> tuple[Participant, str]:
    database = await shop.database("processor", processor_adapters.MIGRATIONS)
    served = await shop.serve(
        processor_registration(processor_adapters.SqlProcessorStore(database))
    )
    return Participant("processor", database), served


async def _catalog(shop: _Assembly, inventory_at: str) -> tuple[Participant, str]:
    database = await shop.database("catalog", catalog_adapters.MIGRATIONS)
    stock_levels = catalog_adapters.GrpcStockLevels(await shop.channel("catalog", inventory_at))
    store = catalog_adapters.SqlCatalogStore(database)
    return Participant("catalog", database), await shop.serve(
        *catalog_registrations(store, stock_levels)
    )


async def _orders(shop: _Assembly, catalog_at: str) -> tuple[Participant, str]:
    database = await shop.database("orders", orders_adapters.MIGRATIONS)
    store = orders_adapters.SqlOrdersStore(database)
    prices = orders_adapters.GrpcCatalog(await shop.channel("orders", catalog_at))
    served = await shop.serve(orders_registration(store, prices))
    return Participant("orders", database, orders_saga.handlers(store.within)), served


async def _payments(shop: _Assembly, processor_at: str) -> Participant:
    database = await shop.database("payments", payments_adapters.MIGRATIONS)
    store = payments_adapters.SqlPaymentsStore(database)
    card = payments_adapters.GrpcPaymentProvider(await shop.channel("payments", processor_at))
    return Participant("payments", database, payments_saga.handlers(store.within, card))


async def _shipping(shop: _Assembly) -> Participant:
    database = await shop.database("shipping", shipping_adapters.MIGRATIONS)
    store = shipping_adapters.SqlShippingStore(database)
    return Participant("shipping", database, shipping_saga.handlers(store.within))


async def _notifications(shop: _Assembly) -> Participant:
    database = await shop.database("notifications", notifications_adapters.MIGRATIONS)
    store = notifications_adapters.SqlNotificationsStore(database)
    return Participant("notifications", database, notifications_saga.handlers(store.within))


async def _search(shop: _Assembly) -> Participant:
    """Search ranking by keywords alone: no embedding model is loaded in a test."""
    database = await shop.database("search", search_adapters.MIGRATIONS)
    store = search_adapters.SqlSearchStore(database)
    await open_read_model(store)
    handlers = search_projection.handlers(store.within, SemanticIndex(None))
    return Participant("search", database, handlers)


@asynccontextmanager
async def running_shop(directory: Path, handing: Handing) -> AsyncIterator[Shop]:
    """Every service of the shop, each on its SQLite file under `directory`, calling the
    others through channels that hand each consumer what `handing` says."""
    async with AsyncExitStack() as stack:
        shop = _Assembly(stack, directory, handing)
        inventory, inventory_at = await _inventory(shop)
        processor, processor_at = await _processor(shop)
        catalog, catalog_at = await _catalog(shop, inventory_at)
        orders, orders_at = await _orders(shop, catalog_at)
        participants = [
            catalog,
            processor,
            orders,
            inventory,
            await _payments(shop, processor_at),
            await _shipping(shop),
            await _notifications(shop),
            await _search(shop),
        ]
        customer_catalog = await stack.enter_async_context(grpc.aio.insecure_channel(catalog_at))
        customer_orders = await stack.enter_async_context(grpc.aio.insecure_channel(orders_at))
        yield Shop(
            catalog_grpc.CatalogServiceStub(customer_catalog),
            orders_grpc.OrdersServiceStub(customer_orders),
            participants,
            Courier(participants, handing),
        )


def euros(units: int, cents: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code="EUR", units=units, nanos=cents * 10_000_000)


async def stocked(shop: Shop, name: str, price: money_pb2.Money, weight: int, stock: int) -> str:
    product = catalog_pb.Product(
        name=name,
        description=f"A {name.lower()} for every day.",
        price=price,
        category="kitchen",
        weight_grams=weight,
    )
    created = await shop.catalog.CreateProduct(
        catalog_pb.CreateProductRequest(product=product, initial_stock=stock)
    )
    return str(created.product.id)


async def changed_and_removed(shop: Shop) -> None:
    """A product renamed, then taken out of the catalog, which orders never see."""
    product_id = await stocked(shop, "Jug", euros(9, 90), 700, 3)
    renamed = catalog_pb.Product(id=product_id, name="Water jug", price=euros(10, 50))
    await shop.catalog.UpdateProduct(
        catalog_pb.UpdateProductRequest(
            product=renamed, update_mask=field_mask_pb2.FieldMask(paths=["name", "price"])
        )
    )
    await shop.catalog.DeleteProduct(catalog_pb.DeleteProductRequest(id=product_id))


async def place(
    shop: Shop,
    lines: Sequence[tuple[str, int]],
    address: postal_address_pb2.PostalAddress = HOME,
    payment_token: str = "tok_visa",
) -> str:
    request = orders_pb.PlaceOrderRequest(
        lines=[orders_pb.OrderLine(product_id=p, quantity=q) for p, q in lines],
        shipping_address=address,
        payment_token=payment_token,
        request_id=str(uuid.uuid4()),
    )
    placed = await shop.orders.PlaceOrder(request, metadata=ALICE)
    return str(placed.order.id)


async def shop_a_day(shop: Shop) -> list[Message]:
    """A day of the shop, through each way an order can end, the saga run to its end;
    returns what the catalog then answers a read with stock levels.

    One order of each: confirmed; its card declined; out of stock; to an address no
    parcel goes to (refunded, then released); cancelled by the customer while pending.
    And a product changed and removed, for the catalog's own events.
    """
    tea = await stocked(shop, "Tea", euros(4, 50), 250, 20)
    cup = await stocked(shop, "Cup", euros(12, 99), 400, 20)
    kettle = await stocked(shop, "Kettle", euros(25, 0), 1200, 1)
    await changed_and_removed(shop)
    await place(shop, [(tea, 2), (cup, 1)])
    await place(shop, [(tea, 1)], payment_token="tok_declined")
    await place(shop, [(kettle, 5)])
    await place(shop, [(cup, 1)], address=UNDELIVERABLE)
    cancelled = await place(shop, [(tea, 3)])
    cancel = orders_pb.CancelOrderRequest(id=cancelled, reason="found it cheaper")
    await shop.orders.CancelOrder(cancel, metadata=ALICE)
    await shop.courier.deliver_all()
    with_stock = catalog_pb.ListProductsRequest(view=catalog_pb.PRODUCT_VIEW_WITH_STOCK)
    return [await shop.catalog.ListProducts(with_stock)]


#: A database's own tables, each with its rowid: not SQLite's, nor a full-text index (a
#: virtual table and its shadows), which holds what the tables hold.
_TABLES = sa.text(
    "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table' "
    "AND wr = 0 AND name NOT LIKE 'sqlite%' ORDER BY name"
)


async def outcome(shop: Shop, answers: Sequence[Message]) -> Outcome:
    """What the shop holds and answered after its day: every row of every service's own
    tables, and the `answers` the customer read."""
    values: Outcome = {}
    for participant in shop.participants:
        values |= await _rows(participant)
    for index, answer in enumerate(answers):
        values |= _flattened(f"answers[{index}]", json_format.MessageToDict(answer))
    return values


async def _rows(participant: Participant) -> Outcome:
    """Every row of the participant's own tables, in the order it was written; not the
    mesh's bookkeeping (the outbox, the events applied, the placements a participant keeps
    for later steps, whose reading those steps show)."""
    values: Outcome = {}
    async with participant.database.snapshot() as connection:
        listed = await connection.execute(_TABLES)
        for table in [row.name for row in listed if row.name not in mesh_tables.tables]:
            rows = await connection.execute(sa.text(f'SELECT * FROM "{table}" ORDER BY rowid'))
            for index, row in enumerate(rows.mappings()):
                where = f"{participant.name}/{table}[{index}]"
                values |= {f"{where}.{column}": value for column, value in row.items()}
    return values


def _flattened(where: str, value: object) -> Outcome:
    """`value` (a message as JSON) as one entry per scalar, by its path under `where`."""
    if isinstance(value, dict):
        children = [(f"{where}.{key}", item) for key, item in value.items()]
    elif isinstance(value, list):
        children = [(f"{where}[{index}]", item) for index, item in enumerate(value)]
    else:
        return {where: value}
    flat: Outcome = {}
    for path, item in children:
        flat |= _flattened(path, item)
    return flat


#: The values a run makes afresh, which two runs of the same day make differently.
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?")
#: A text's words and what lies between them, each a token.
_TOKENS = re.compile(r"(\W+)")


def settled(values: Outcome) -> Outcome:
    """`values` with every time as `<time>`, and every id as `<id N>`, numbered in the order
    they appear: what two runs of the same day hold alike, ids still telling which rows
    belong together."""
    ids: dict[str, str] = {}

    def numbered(match: re.Match[str]) -> str:
        return ids.setdefault(match.group(), f"<id {len(ids) + 1}>")

    return {
        key: _TIME.sub("<time>", _ID.sub(numbered, value)) if isinstance(value, str) else value
        for key, value in values.items()
    }


def differences(whole: Outcome, again: Outcome, handed: Outcome) -> list[str]:
    """Where the shop's outcome with a consumer `handed` only what its contract declares
    differs from its outcome with whole messages, in the order the outcome holds them.

    Times and ids are settled first (`settled`). What then still differs between two
    runs with whole messages (`whole`, `again`: a parcel's random tracking number) is
    compared token by token, each token the two runs made differently only for being
    set."""
    whole, again, handed = settled(whole), settled(again), settled(handed)
    if whole.keys() != again.keys():
        changed = sorted(whole.keys() ^ again.keys())[:5]
        raise AssertionError(f"two runs of the same day differ in what they hold: {changed}")
    missing = "<none>"
    return [
        f"{key}: {whole.get(key, missing)!r} -> {handed.get(key, missing)!r}"
        for key in [*whole, *(key for key in handed if key not in whole)]
        if key not in whole or key not in handed or not _alike(whole[key], again[key], handed[key])
    ]


def _alike(whole: object, again: object, handed: object) -> bool:
    """Whether `handed` is what the shop held as `whole` in one run and `again` in another:
    the same, but for what the two runs made afresh, which need only be set."""
    if whole == again:
        return handed == whole
    if not (isinstance(whole, str) and isinstance(again, str) and isinstance(handed, str)):
        return _set(handed) == _set(whole)
    first, second, given = (_TOKENS.split(text) for text in (whole, again, handed))
    if len(first) != len(second):
        return _set(handed) == _set(whole)
    return len(given) == len(first) and all(
        token == one if one == other else _set(token)
        for one, other, token in zip(first, second, given, strict=True)
    )


def _set(value: object) -> bool:
    return value is not None and value not in ("", 0, b"")
