"""Orders placed and followed through the edge's REST API as a client does, and the
stock they leave: what the scenarios that drive the order saga share."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mesh.tools import loadgen, trial
from mesh.tools.shopper import CANCELLED, CONFIRMED, Shopper

# -- following orders -------------------------------------------------------------------

TERMINAL = (CONFIRMED, CANCELLED)
#: Between two readings of the orders that have not ended yet.
SETTLE_PAUSE_SECONDS = 0.5
#: How a call through the edge fails: an answer other than 2xx, or none at all (the
#: connection refused, or closed before the answer).
CALL_ERRORS = (loadgen.HttpStatusError, OSError, EOFError)


def worth_retrying(error: Exception) -> bool:
    """Whether a call that failed with `error` may succeed if made again: a 5xx or no
    answer (a service restarting), not a refusal of the request itself."""
    if isinstance(error, loadgen.HttpStatusError):
        return error.status >= 500
    return isinstance(error, CALL_ERRORS)


async def read_ends(
    buyer: Shopper, order_ids: Iterable[str], orders: dict[str, dict[str, Any]]
) -> bool:
    """Read again through the edge, into `orders`, each order not yet seen ended (one the
    edge cannot answer for now is left for the next reading); whether all have ended."""
    ended = True
    for order_id in order_ids:
        if orders.get(order_id, {}).get("status") in TERMINAL:
            continue
        try:
            orders[order_id] = await buyer.fetch(order_id)
        except CALL_ERRORS as error:
            if not worth_retrying(error):
                raise
        ended = ended and orders.get(order_id, {}).get("status") in TERMINAL
    return ended


def status_of(orders: dict[str, dict[str, Any]], order_id: str) -> str:
    """The order's status as last read; "never read" when the edge never answered."""
    status: str = orders.get(order_id, {}).get("status", "never read")
    return status


def story(orders: dict[str, dict[str, Any]], order_ids: Sequence[str], shown: int = 3) -> str:
    """How the first `shown` of `order_ids` ended, as the edge last answered for them."""
    told = []
    for order_id in order_ids[:shown]:
        order = orders.get(order_id, {})
        history = [step["name"] for step in order.get("history", ())]
        reason = f" ({order['cancelReason']})" if order.get("cancelReason") else ""
        told.append(f"{order_id} {status_of(orders, order_id)} after {history}{reason}")
    return "; ".join(told)


# -- placing orders ---------------------------------------------------------------------

#: A client sends a placement that met a 5xx, no answer or a 429 that says when to try
#: again (the same bytes, so the same request id: PlaceOrder stores one order per request
#: id) after a pause: the delay the refusal names (`RetryInfo`: orders' backlog full while
#: the kills hold the saga up), else RETRY_PAUSE_SECONDS, doubled for each try before
#: (at most LONGEST_PAUSE_SECONDS), so the clients waiting do not take the CPU the saga
#: needs to catch up; for as long as PATIENCE_SECONDS after it was first sent. Orders
#: takes a few seconds to come back from a kill.
RETRY_PAUSE_SECONDS = 0.5
LONGEST_PAUSE_SECONDS = 8.0
PATIENCE_SECONDS = 120.0
#: Each order is for 1, 2, 3, 1, ... units, so the stock counts units, not orders.
MAX_UNITS = 3


@dataclass
class Placement:
    """One order a client places, and how that went."""

    request: bytes
    """The PlaceOrder request, sent again as it is on a retry."""
    units: int
    order_id: str | None = None
    """Set once PlaceOrder answered 200: the order is acknowledged."""
    retries: int = 0
    failure: str = ""
    """Why the last try failed."""
    sent_at: float = 0.0
    """`time.perf_counter()` when it was first sent."""


def order_units(orders: int) -> list[int]:
    return [1 + index % MAX_UNITS for index in range(orders)]


async def place_with_retries(
    place: Callable[[bytes], Awaitable[str]], placement: Placement
) -> None:
    """Place the order with `place` (`Shopper.place`) as a client does while orders
    restarts or refuses (see PATIENCE_SECONDS)."""
    placement.sent_at = time.perf_counter()
    while True:
        try:
            placement.order_id = await place(placement.request)
            return
        except CALL_ERRORS as error:
            placement.failure = f"{type(error).__name__}: {error}"
            pause = retry_pause(error, placement)
            if pause is None:
                return
        await asyncio.sleep(pause)


def retry_pause(error: Exception, placement: Placement) -> float | None:
    """How long to wait before sending `placement` again after `error` (see
    PATIENCE_SECONDS); None: give up."""
    delay = None
    if isinstance(error, loadgen.HttpStatusError):
        delay = loadgen.retry_delay(error.status, error.body)
    if delay is None and not worth_retrying(error):
        return None
    base = RETRY_PAUSE_SECONDS if delay is None else delay
    pause = min(base * 2.0**placement.retries, max(base, LONGEST_PAUSE_SECONDS))
    if time.perf_counter() - placement.sent_at + pause > PATIENCE_SECONDS:
        return None
    placement.retries += 1
    return pause


async def burst(shopper: Shopper, orders: int, rate: float) -> tuple[list[Placement], float]:
    """Place `orders` orders at `rate` per second; the placements, and when the last was
    answered (`time.monotonic()`)."""
    placements = [Placement(shopper.order_request(units), units)
                  for units in order_units(orders)]  # fmt: skip
    waiting = iter(placements)

    async def place_next() -> None:
        await place_with_retries(shopper.place, next(waiting))

    # Room for one order more than planned, so that rounding never drops the last.
    seconds = (orders + 1) / rate
    await loadgen.open_loop(place_next, rate=rate, duration=seconds, max_requests=orders)
    return placements, time.monotonic()


async def drain(buyer: Shopper, order_ids: Sequence[str], seconds: float) -> (
    dict[str, dict[str, Any]]
):  # fmt: skip
    """Read the orders through the edge until all have ended, `seconds` at most; each as
    last read (none for an order the edge never answered for)."""
    orders: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + seconds
    while True:
        ended = await read_ends(buyer, order_ids, orders)
        if ended or time.monotonic() >= deadline:
            return orders
        await asyncio.sleep(SETTLE_PAUSE_SECONDS)


# -- the stock --------------------------------------------------------------------------

#: How long the stock may take to follow the orders once they ended: inventory takes a
#: confirmed order's units out when it consumes `order_confirmed`, after orders decided.
STOCK_SETTLE_SECONDS = 30.0

Stock = tuple[int, int]
"""(units on hand, units reserved) of a product."""


def stock_level(mesh: trial.TrialMesh, product_id: str) -> Stock | None:
    """The product's stock as the edge answers `GET /v1/products/ID/stock` (inventory's
    GetStock); None while inventory cannot answer."""
    url = f"{mesh.edge_url}/v1/products/{urllib.parse.quote(product_id)}/stock"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            level = json.loads(response.read())["stock"]
    except urllib.error.HTTPError as error:
        if error.code < 500:
            raise
        return None
    except OSError:
        return None
    # JSON leaves out a field at zero.
    return int(level.get("onHand", 0)), int(level.get("reserved", 0))


async def settled_stock(
    mesh: trial.TrialMesh, product_id: str, expected: Stock, seconds: float
) -> Stock | None:
    """The stock once it is `expected` or, after `seconds`, as last read."""
    deadline = time.monotonic() + seconds
    while True:
        level = await asyncio.to_thread(stock_level, mesh, product_id)
        if level == expected or time.monotonic() >= deadline:
            return level
        await asyncio.sleep(SETTLE_PAUSE_SECONDS)


def expected_stock(initial: int, placements: Iterable[Placement],
                   orders: dict[str, dict[str, Any]]) -> Stock:  # fmt: skip
    """The stock once every order ended: the confirmed orders' units gone, none reserved."""
    confirmed = [p for p in placements if p.order_id and status_of(orders, p.order_id) == CONFIRMED]
    sold = sum(p.units for p in confirmed)
    return initial - sold, 0
