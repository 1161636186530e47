"""Each provider gives every consumer what the consumer's contract says it reads.

Calls: for each interaction of each consumer's contract, the provider's real servicer
runs in-process on a temporary SQLite file (with the real services it calls), is put in
the state the interaction is `given` (`STATES`, the provider's to keep), and is called
with only the request fields the consumer declares; its answer must fill every response
field the consumer reads.

Events: the shop runs a day (tests/contracts/shop.py: every service's real flows, which
write their events to their outboxes as in the mesh); every event a consumer declares
must be among the provider's, and fill every field the consumer reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message
from google.type import money_pb2

from mesh.tools.consumer_contracts import (
    Breach,
    Contract,
    Interaction,
    contracts_on,
    load_contracts,
    only,
    unset_paths,
    verify_events,
    verify_response,
)
from services.inventory import adapters as inventory_adapters
from services.inventory.bootstrap import registration as inventory_registration
from services.processor import adapters as processor_adapters
from services.processor.bootstrap import registration as processor_registration
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc
from shop.inventory.v1 import inventory_service_pb2 as inventory_pb
from shop.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from shop.processor.v1 import processor_service_pb2 as processor_pb
from tests.contracts.shop import Handing, running_shop, shop_a_day
from tests.support.component import (
    SqliteDatabases,
    catalog_and_inventory,
    serving,
    sqlite_database,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = load_contracts(ROOT)
INTERACTIONS = [(c, i) for c in CONTRACTS for i in c.interactions]
#: Every provider some consumer handles the events of.
PUBLISHERS = sorted({contract.provider for contract in CONTRACTS if contract.events})

#: Sets a provider up for an interaction, over a channel to it; returns the request.
State = Callable[[grpc.aio.Channel], Awaitable[Message]]


@asynccontextmanager
async def catalog(directory: Path) -> AsyncIterator[grpc.aio.Channel]:
    async with catalog_and_inventory(SqliteDatabases(), directory) as (channel, _):
        yield channel


@asynccontextmanager
async def inventory(directory: Path) -> AsyncIterator[grpc.aio.Channel]:
    migrations = inventory_adapters.MIGRATIONS
    async with (
        sqlite_database(directory, "inventory", migrations) as database,
        serving(inventory_registration(inventory_adapters.SqlInventoryStore(database))) as channel,
    ):
        yield channel


@asynccontextmanager
async def processor(directory: Path) -> AsyncIterator[grpc.aio.Channel]:
    migrations = processor_adapters.MIGRATIONS
    async with (
        sqlite_database(directory, "processor", migrations) as database,
        serving(processor_registration(processor_adapters.SqlProcessorStore(database))) as channel,
    ):
        yield channel


#: Each provider of calls, served in-process on its own database under a directory.
PROVIDERS: dict[str, Callable[[Path], AbstractAsyncContextManager[grpc.aio.Channel]]] = {
    "catalog": catalog,
    "inventory": inventory,
    "processor": processor,
}


async def products_exist(channel: grpc.aio.Channel) -> Message:
    stub = catalog_grpc.CatalogServiceStub(channel)
    ids = []
    for name, units, nanos in (("Tea", 4, 500_000_000), ("Cup", 12, 990_000_000)):
        price = money_pb2.Money(currency_code="EUR", units=units, nanos=nanos)
        product = catalog_pb.Product(name=name, category="kitchen", price=price, weight_grams=250)
        created = await stub.CreateProduct(catalog_pb.CreateProductRequest(product=product))
        ids.append(created.product.id)
    return catalog_pb.BatchGetProductsRequest(ids=ids)


async def any_product(channel: grpc.aio.Channel) -> Message:
    return inventory_pb.SetStockRequest(product_id="p-1", on_hand=5, request_id="p-1:initial")


async def products_have_stock_levels(channel: grpc.aio.Channel) -> Message:
    stub = inventory_grpc.InventoryServiceStub(channel)
    for product_id, on_hand in (("p-1", 5), ("p-2", 3)):
        await stub.SetStock(inventory_pb.SetStockRequest(product_id=product_id, on_hand=on_hand))
    return inventory_pb.BatchGetStockRequest(product_ids=["p-1", "p-2"])


def authorization(payment_token: str) -> State:
    async def card(channel: grpc.aio.Channel) -> Message:
        amount = money_pb2.Money(currency_code="EUR", units=21, nanos=990_000_000)
        return processor_pb.AuthorizeRequest(
            payment_token=payment_token, amount=amount, idempotency_key="order-o-1"
        )

    return card


#: The states a provider can be put in, by the name consumers' contracts give them.
STATES: dict[tuple[str, str], State] = {
    ("catalog", "the products exist"): products_exist,
    ("inventory", "any product"): any_product,
    ("inventory", "the products have stock levels"): products_have_stock_levels,
    ("processor", "the card is approved"): authorization("tok_visa"),
    ("processor", "the card is declined"): authorization("tok_declined"),
}


def named(case: tuple[Contract, Interaction]) -> str:
    contract, interaction = case
    return f"{contract.consumer}-{contract.provider}-{interaction.method.name}-{interaction.given}"


async def answer(
    channel: grpc.aio.Channel, contract: Contract, interaction: Interaction, request: Message
) -> Message:
    """The provider's answer to `request`; a failed call breaks the contract."""
    call = channel.unary_unary(
        interaction.grpc_path,
        request_serializer=type(request).SerializeToString,
        response_deserializer=interaction.response_type.FromString,
    )
    try:
        response: Message = await call(request)
    except grpc.aio.AioRpcError as error:
        problem = f"the call failed: {error.code().name}: {error.details()}"
        pytest.fail(str(Breach(contract, interaction.name, problem)))
    return response


@pytest.mark.parametrize("case", INTERACTIONS, ids=named)
async def test_a_provider_answers_what_its_consumer_reads(
    case: tuple[Contract, Interaction], tmp_path: Path
) -> None:
    contract, interaction = case
    state = STATES.get((contract.provider, interaction.given))
    assert state is not None, (
        f"{contract.provider} cannot be put in the state {interaction.given!r} that "
        f"{contract.source} expects: add it to STATES"
    )
    async with PROVIDERS[contract.provider](tmp_path) as channel:
        request = await state(channel)
        assert not unset_paths(request, interaction.request), (
            f"the state {interaction.given!r} gives no value to the request fields "
            f"{unset_paths(request, interaction.request)} that {contract.consumer} sets"
        )
        response = await answer(channel, contract, interaction, only(request, interaction.request))
    breaches = verify_response(contract, interaction, response)
    if breaches:
        pytest.fail("\n".join(str(breach) for breach in breaches))


def test_every_provider_state_is_one_a_contract_expects() -> None:
    expected = {(c.provider, i.given) for c, i in INTERACTIONS}
    assert sorted(STATES.keys() - expected) == []


@pytest.mark.parametrize("provider", PUBLISHERS)
async def test_a_provider_publishes_what_its_consumers_read(provider: str, tmp_path: Path) -> None:
    async with running_shop(tmp_path, Handing()) as shop:
        await shop_a_day(shop)
    published = shop.courier.published
    breaches = [
        breach
        for contract in contracts_on(provider, CONTRACTS)
        for breach in verify_events(contract, published)
    ]
    if breaches:
        pytest.fail("\n".join(str(breach) for breach in breaches))
