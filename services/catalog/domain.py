"""The catalog's domain: products and the rules a product must follow."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, replace
from datetime import datetime

from mesh.runtime.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound
from mesh.runtime.money import Money

MAX_NAME_LENGTH = 200
MAX_CATEGORY_LENGTH = 64
MAX_DESCRIPTION_LENGTH = 10_000
#: The heaviest unit a product may weigh, in grams: the heaviest parcel a carrier takes
#: (shipping's limit), so that one unit of every product can be shipped.
MAX_WEIGHT_GRAMS = 31_500

#: An id a client may choose for a new product (AIP-122): lower-case letters, digits and
#: hyphens, starting and ending with a letter or digit, so a UUID qualifies; at most 36
#: characters, as many as a UUID, which the products table keeps.
PRODUCT_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,34}[a-z0-9])?")

#: Product fields a client may change (AIP-134 update mask paths).
UPDATABLE_FIELDS = frozenset({"name", "description", "price", "category", "weight_grams"})


@dataclass(frozen=True)
class Product:
    """Something the shop sells; `price` is the authoritative unit price."""

    id: str
    name: str
    description: str
    price: Money
    category: str
    weight_grams: int
    create_time: datetime
    update_time: datetime
    #: How many times the product was written, its creation counted as 1.
    revision: int = 1

    @property
    def stock_link(self) -> str:
        """Where the product's stock level lives (the inventory service's REST path)."""
        return f"/v1/products/{self.id}/stock"


def product_not_found(product_id: str) -> NotFound:
    return NotFound(
        f"product {product_id!r} does not exist",
        reason="PRODUCT_NOT_FOUND",
        metadata={"product_id": product_id},
    )


def product_exists(product_id: str) -> AlreadyExists:
    return AlreadyExists(
        f"product {product_id!r} exists already; choose another id",
        reason="PRODUCT_ALREADY_EXISTS",
        metadata={"product_id": product_id},
    )


def _chosen_id(product_id: str) -> str:
    """The id a client chose, if it is one a product may have; a fresh UUID if none."""
    if not product_id:
        return str(uuid.uuid4())
    if not PRODUCT_ID.fullmatch(product_id):
        raise InvalidArgument.of(
            [
                FieldViolation(
                    "product_id",
                    "The product id must be 1 to 36 lower-case letters, digits and hyphens, "
                    "starting and ending with a letter or digit.",
                )
            ]
        )
    return product_id


def _violations(product: Product) -> list[FieldViolation]:
    problems = []
    name = product.name.strip()
    if not name:
        problems.append(FieldViolation("product.name", "The name must not be empty."))
    elif len(name) > MAX_NAME_LENGTH:
        problems.append(
            FieldViolation(
                "product.name", f"The name must be at most {MAX_NAME_LENGTH} characters."
            )
        )
    if product.price.minor_units <= 0:
        problems.append(FieldViolation("product.price", "The price must be positive."))
    category = product.category.strip()
    if not category:
        problems.append(FieldViolation("product.category", "The category must not be empty."))
    elif len(category) > MAX_CATEGORY_LENGTH or category != category.lower():
        problems.append(
            FieldViolation(
                "product.category",
                f"The category must be lower case, at most {MAX_CATEGORY_LENGTH} characters.",
            )
        )
    if len(product.description) > MAX_DESCRIPTION_LENGTH:
        problems.append(
            FieldViolation(
                "product.description",
                f"The description must be at most {MAX_DESCRIPTION_LENGTH} characters.",
            )
        )
    problems += _weight_violations(product.weight_grams)
    return problems


def _weight_violations(weight_grams: int) -> list[FieldViolation]:
    """A weight shipping can send one unit of: every order is shipped, and an order of a
    product it cannot send would be refunded after its payment was captured."""
    if weight_grams <= 0:
        message = "The weight must be positive: every order is shipped, by weight."
    elif weight_grams > MAX_WEIGHT_GRAMS:
        message = f"The weight must be at most {MAX_WEIGHT_GRAMS:,} grams, the heaviest parcel."
    else:
        return []
    return [FieldViolation("product.weight_grams", message)]


def _checked(product: Product) -> Product:
    problems = _violations(product)
    if problems:
        raise InvalidArgument.of(problems)
    return replace(product, name=product.name.strip(), category=product.category.strip())


def new_product(
    *,
    name: str,
    description: str,
    price: Money,
    category: str,
    weight_grams: int,
    now: datetime,
    product_id: str = "",
) -> Product:
    """A new product, with the id its creator chose or a fresh one, if it follows the rules."""
    return _checked(
        Product(
            id=_chosen_id(product_id),
            name=name,
            description=description,
            price=price,
            category=category,
            weight_grams=weight_grams,
            create_time=now,
            update_time=now,
        )
    )


def updated_product(product: Product, changes: dict[str, object], now: datetime) -> Product:
    """`product` with `changes` (field -> new value) applied, if the result follows the rules."""
    unknown = sorted(set(changes) - UPDATABLE_FIELDS)
    if unknown:
        raise InvalidArgument.of(
            [
                FieldViolation(
                    "update_mask",
                    f"{path!r} cannot be updated; "
                    f"updatable: {', '.join(sorted(UPDATABLE_FIELDS))}.",
                )
                for path in unknown
            ]
        )
    changed = replace(product, **changes)  # type: ignore[arg-type]
    return _checked(replace(changed, update_time=now, revision=product.revision + 1))
