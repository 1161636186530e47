"""The catalog's gRPC face in API version 2 (`shop.catalog.v2`): protobuf in, the same
commands and handlers as version 1, protobuf out.

Version 2 names each product as a resource, `products/{product}` (AIP-122), and so
renames one field: v2's `name` is the resource name, and the display name, which the
domain and v1 call `name`, is v2's `display_name`. Everything else is a mapping:

* a resource name to the product id it names, INVALID_ARGUMENT on the field otherwise;
* an update mask (AIP-134) to the domain's changes: each path a field of the product,
  `*` alone for every updatable one, the name and output-only fields ignored (AIP-203),
  any other path INVALID_ARGUMENT, one violation each;
* a filter (AIP-160, the part the catalog needs: the category) to the category listed;
* the domain's field violations to v2's field names.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

from mesh.runtime.errors import FieldViolation, InvalidArgument
from mesh.runtime.money import Money
from services.catalog import handlers
from services.catalog.domain import Product
from services.catalog.ports import CatalogStore, StockLevels
from services.catalog.servicer import fields_alike
from shop.catalog.v2 import catalog_service_pb2 as pb
from shop.catalog.v2 import catalog_service_pb2_grpc as pb_grpc

#: What every product's resource name starts with (`products/{product}`).
COLLECTION = "products/"

#: The update mask paths of the fields a client may change, each with the domain's name
#: of the field.
UPDATABLE = {
    "display_name": "name",
    "description": "description",
    "price": "price",
    "category": "category",
    "weight_grams": "weight_grams",
}
#: Paths a mask may name that an update leaves as they are: the product's name, which
#: says which product to update, and its output-only fields (AIP-203).
IGNORED = frozenset({"name", "stock_link", "create_time", "update_time"})
#: The mask path that names every updatable field (AIP-134: a full replacement).
EVERY_FIELD = "*"

#: The filters `ListProducts` takes: the category compared with a text, quoted or not.
_CATEGORY_FILTER = re.compile(
    r'\s*category\s*=\s*(?:"(?P<quoted>[^"\\]+)"|(?P<bare>[A-Za-z0-9_.-]+))\s*'
)

#: The domain's (and v1's) field paths that v2 names otherwise.
_V2_PATHS = {"product.name": "product.display_name"}


def resource_name(product_id: str) -> str:
    """The resource name of the product with this id."""
    return f"{COLLECTION}{product_id}"


def _name_violation(name: str, field: str) -> FieldViolation | None:
    if not name:
        return FieldViolation(field, f"{field} is required.", reason="REQUIRED")
    product = name.removeprefix(COLLECTION)
    if name.startswith(COLLECTION) and product and "/" not in product:
        return None
    return FieldViolation(
        field,
        f"{field} must be a product's resource name, products/{{product}}.",
        reason="INVALID_RESOURCE_NAME",
    )


def product_id(name: str, field: str) -> str:
    """The id of the product `name` names; INVALID_ARGUMENT on `field` if it names none."""
    violation = _name_violation(name, field)
    if violation is not None:
        raise InvalidArgument.of([violation])
    return name.removeprefix(COLLECTION)


def product_ids(names: Sequence[str], field: str) -> list[str]:
    """The ids of the products `names` name, in order; INVALID_ARGUMENT naming each
    element of the list `field` that names none (`names[2]`)."""
    violations = [
        violation
        for index, name in enumerate(names)
        if (violation := _name_violation(name, f"{field}[{index}]")) is not None
    ]
    if violations:
        raise InvalidArgument.of(violations)
    return [name.removeprefix(COLLECTION) for name in names]


def to_proto(product: Product) -> pb.Product:
    return pb.Product(
        name=resource_name(product.id), display_name=product.name, **fields_alike(product)
    )


def _price(message: pb.Product) -> Money:
    return Money.from_request(message.price, "product.price")


def _mask_violations(paths: Sequence[str]) -> list[FieldViolation]:
    if EVERY_FIELD in paths and len(paths) > 1:
        return [
            FieldViolation(
                "update_mask",
                "* names every updatable field, so it must be the mask's only path.",
                reason="INVALID_FIELD_MASK",
            )
        ]
    known = f"{', '.join(UPDATABLE)} (or * alone)"
    return [
        FieldViolation(
            "update_mask",
            f"{path!r} is no updatable field of a product; the mask takes {known}.",
            reason="UNKNOWN_FIELD",
        )
        for path in paths
        if path not in UPDATABLE and path not in IGNORED and path != EVERY_FIELD
    ]


def masked_changes(product: pb.Product, paths: Sequence[str]) -> dict[str, object]:
    """The domain's changes an update makes: the new values of the fields the mask names,
    by their domain names (AIP-134)."""
    violations = _mask_violations(paths)
    if violations:
        raise InvalidArgument.of(violations)
    chosen = UPDATABLE if EVERY_FIELD in paths else [p for p in paths if p in UPDATABLE]
    return {
        UPDATABLE[path]: _price(product) if path == "price" else getattr(product, path)
        for path in chosen
    }


def category_filter(text: str) -> str:
    """The category an AIP-160 filter lists; empty for every product."""
    if not text.strip():
        return ""
    match = _CATEGORY_FILTER.fullmatch(text)
    if match is None:
        raise InvalidArgument.of(
            [
                FieldViolation(
                    "filter",
                    "The filter may compare the category with a text only, as in "
                    'category = "books".',
                    reason="UNSUPPORTED_FILTER",
                )
            ]
        )
    return str(match["quoted"] or match["bare"])


@contextlib.contextmanager
def _in_v2_terms() -> Iterator[None]:
    """The domain's field violations by v2's field names (`product.display_name`)."""
    try:
        yield
    except InvalidArgument as error:
        raise error.renamed(lambda path: _V2_PATHS.get(path, path)) from None


def _create_command(request: pb.CreateProductRequest) -> handlers.CreateProduct:
    return handlers.CreateProduct(
        name=request.product.display_name,
        description=request.product.description,
        price=_price(request.product),
        category=request.product.category,
        weight_grams=request.product.weight_grams,
        initial_stock=request.initial_stock,
        request_id=request.request_id,
        product_id=request.product_id,
    )


class CatalogServicerV2(pb_grpc.CatalogServiceServicer):
    def __init__(self, store: CatalogStore, inventory: StockLevels) -> None:
        self._store = store
        self._inventory = inventory

    async def GetProduct(
        self, request: pb.GetProductRequest, context: Any
    ) -> pb.GetProductResponse:
        product = await handlers.get_product(self._store, product_id(request.name, "name"))
        return pb.GetProductResponse(product=to_proto(product))

    async def ListProducts(
        self, request: pb.ListProductsRequest, context: Any
    ) -> pb.ListProductsResponse:
        query = handlers.ListProducts(
            category_filter(request.filter), request.page_size, request.page_token
        )
        page = await handlers.list_products(self._store, query)
        return pb.ListProductsResponse(
            products=[to_proto(p) for p in page.products], next_page_token=page.next_page_token
        )

    async def BatchGetProducts(
        self, request: pb.BatchGetProductsRequest, context: Any
    ) -> pb.BatchGetProductsResponse:
        ids = product_ids(request.names, "names")
        products = await handlers.batch_get_products(self._store, ids)
        return pb.BatchGetProductsResponse(products=[to_proto(p) for p in products])

    async def CreateProduct(
        self, request: pb.CreateProductRequest, context: Any
    ) -> pb.CreateProductResponse:
        with _in_v2_terms():
            command = _create_command(request)
            product = await handlers.create_product(self._store, self._inventory, command)
        return pb.CreateProductResponse(product=to_proto(product))

    async def UpdateProduct(
        self, request: pb.UpdateProductRequest, context: Any
    ) -> pb.UpdateProductResponse:
        command = handlers.UpdateProduct(
            product_id(request.product.name, "product.name"),
            masked_changes(request.product, request.update_mask.paths),
            request.request_id,
        )
        with _in_v2_terms():
            product = await handlers.update_product(self._store, command)
        return pb.UpdateProductResponse(product=to_proto(product))

    async def DeleteProduct(
        self, request: pb.DeleteProductRequest, context: Any
    ) -> pb.DeleteProductResponse:
        await handlers.delete_product(
            self._store, product_id(request.name, "name"), request.request_id
        )
        return pb.DeleteProductResponse()
