"""Search through the edge as the tests use it: a small catalog whose products each have
a paraphrase sharing none of their words, and the calls that create and find them."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

#: Each product with a paraphrase of it that shares none of its words.
CATALOG = {
    "kettle": (
        {"name": "Electric kettle", "description": "Boils 1.7 litres in three minutes.",
         "category": "kitchen"},
        "a device to heat water for tea",
    ),
    "boots": (
        {"name": "Hiking boots", "description": "Waterproof leather, ankle support.",
         "category": "outdoor"},
        "footwear for walking in the mountains",
    ),
    "lamp": (
        {"name": "Desk lamp", "description": "LED, dimmable, adjustable arm.",
         "category": "office"},
        "lighting for reading",
    ),
}  # fmt: skip


def search(edge: httpx.Client, q: str, **params: Any) -> dict[str, Any]:
    response = edge.get("/v1/products:search", params={"q": q, **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def top(edge: httpx.Client, q: str) -> str | None:
    results = search(edge, q).get("results", [])
    return results[0]["productId"] if results else None


def create(edge: httpx.Client, admin: dict[str, str], fields: dict[str, Any]) -> str:
    price = {"currencyCode": "EUR", "units": "30"}
    product = {**fields, "name": f"{fields['name']} {uuid.uuid4().hex[:6]}", "price": price}
    created = edge.post("/v1/products", json={"product": {**product, "weightGrams": 500}},
                        headers=admin)  # fmt: skip
    assert created.status_code == 200, created.text
    product_id: str = created.json()["product"]["id"]
    return product_id
