"""The catalog's gRPC face: protobuf in, command to a handler, protobuf out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mesh.runtime import cacheable
from mesh.runtime.money import Money
from mesh.runtime.timestamps import to_timestamp
from services.catalog import handlers
from services.catalog.domain import UPDATABLE_FIELDS, Product
from services.catalog.ports import CatalogStore, StockLevels
from shop.catalog.v1 import catalog_service_pb2 as pb
from shop.catalog.v1 import catalog_service_pb2_grpc as pb_grpc


def fields_alike(product: Product) -> dict[str, Any]:
    """The fields of a product that every version of the API names and writes alike."""
    return {
        "description": product.description,
        "price": product.price.to_proto(),
        "category": product.category,
        "weight_grams": product.weight_grams,
        "stock_link": product.stock_link,
        "create_time": to_timestamp(product.create_time),
        "update_time": to_timestamp(product.update_time),
    }


#: The service whose methods `_method` names, as the RED metrics name them.
_SERVICE = pb.DESCRIPTOR.services_by_name["CatalogService"].full_name


def _method(name: str) -> str:
    """The full name of one of the catalog's methods: `/shop.catalog.v1.CatalogService/...`."""
    return f"/{_SERVICE}/{name}"


def _stock_to_proto(stock: handlers.StockReading, product_id: str) -> pb.ProductStock:
    if stock.unreachable:
        return pb.ProductStock(state=pb.STOCK_STATE_UNREACHABLE)
    return pb.ProductStock(state=pb.STOCK_STATE_CURRENT, available=stock.available_of(product_id))


def to_proto(product: Product, stock: handlers.StockReading | None = None) -> pb.Product:
    """A product as v1 writes it; with its stock level when the read's view has one."""
    message = pb.Product(id=product.id, name=product.name, **fields_alike(product))
    if stock is not None:
        message.stock.CopyFrom(_stock_to_proto(stock, product.id))
    return message


def _price(message: pb.Product) -> Money:
    return Money.from_request(message.price, "product.price")


def _changes(request: pb.UpdateProductRequest) -> dict[str, object]:
    """The new values of the fields the update mask names (all of them for an empty mask)."""
    paths = list(request.update_mask.paths) or sorted(UPDATABLE_FIELDS)
    values: dict[str, object] = {}
    for path in paths:
        if path == "price":
            values[path] = _price(request.product)
        elif path in UPDATABLE_FIELDS:
            values[path] = getattr(request.product, path)
        else:
            values[path] = None  # refused by the domain, which names every updatable field
    return values


class CatalogServicer(pb_grpc.CatalogServiceServicer):
    def __init__(self, store: CatalogStore, inventory: StockLevels) -> None:
        self._store = store
        self._inventory = inventory

    async def _stock(
        self, products: Sequence[Product], view: int, method: str
    ) -> handlers.StockReading | None:
        """The stock levels of a read's products, if its view has them (AIP-157): none in
        the basic view, which asks inventory nothing; an answer without them is never
        cached."""
        if view != pb.PRODUCT_VIEW_WITH_STOCK:
            return None
        stock = await handlers.read_stock(self._inventory, products, _method(method))
        if stock.unreachable:
            cacheable.no_store()
        return stock

    async def CreateProduct(
        self, request: pb.CreateProductRequest, context: Any
    ) -> pb.CreateProductResponse:
        product = await handlers.create_product(
            self._store,
            self._inventory,
            handlers.CreateProduct(
                name=request.product.name,
                description=request.product.description,
                price=_price(request.product),
                category=request.product.category,
                weight_grams=request.product.weight_grams,
                initial_stock=request.initial_stock,
                request_id=request.request_id,
            ),
        )
        return pb.CreateProductResponse(product=to_proto(product))

    async def GetProduct(
        self, request: pb.GetProductRequest, context: Any
    ) -> pb.GetProductResponse:
        product = await handlers.get_product(self._store, request.id)
        stock = await self._stock([product], request.view, "GetProduct")
        return pb.GetProductResponse(product=to_proto(product, stock))

    async def BatchGetProducts(
        self, request: pb.BatchGetProductsRequest, context: Any
    ) -> pb.BatchGetProductsResponse:
        products = await handlers.batch_get_products(self._store, list(request.ids))
        stock = await self._stock(products, request.view, "BatchGetProducts")
        return pb.BatchGetProductsResponse(products=[to_proto(p, stock) for p in products])

    async def ListProducts(
        self, request: pb.ListProductsRequest, context: Any
    ) -> pb.ListProductsResponse:
        page = await handlers.list_products(
            self._store,
            handlers.ListProducts(request.category, request.page_size, request.page_token),
        )
        stock = await self._stock(page.products, request.view, "ListProducts")
        return pb.ListProductsResponse(
            products=[to_proto(p, stock) for p in page.products],
            next_page_token=page.next_page_token,
        )

    async def UpdateProduct(
        self, request: pb.UpdateProductRequest, context: Any
    ) -> pb.UpdateProductResponse:
        product = await handlers.update_product(
            self._store,
            handlers.UpdateProduct(request.product.id, _changes(request), request.request_id),
        )
        return pb.UpdateProductResponse(product=to_proto(product))

    async def DeleteProduct(
        self, request: pb.DeleteProductRequest, context: Any
    ) -> pb.DeleteProductResponse:
        await handlers.delete_product(self._store, request.id, request.request_id)
        return pb.DeleteProductResponse()
