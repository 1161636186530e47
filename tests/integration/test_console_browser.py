"""The console in a real headless Chromium (Debian's, which .ci/run installs), driven by
Playwright: the map shows every service, a link opens its traces, a trace's waterfall
renders and a span shows its attributes, an order's saga shows its steps, a dead letter
is replayed once confirmed (and not when the confirmation is dismissed), and an
instance's log follows new lines live."""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from nats.js.errors import NotFoundError
from playwright.sync_api import Browser, Dialog, Page, sync_playwright

from mesh.runtime import events
from shop.events.v1 import events_pb2
from tests.support.mesh import RunningMesh, bearer, customer
from tests.support.saga import place, stocked_product, wait_until_terminal
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
T = TypeVar("T")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM is not None, "chromium is needed: .ci/run installs Debian's package"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, mesh: RunningMesh) -> Iterator[Page]:
    opened = browser.new_page(viewport={"width": 1500, "height": 900})
    try:
        opened.goto(mesh.state()["console"]["url"])
        opened.wait_for_selector("#graph .node[data-node=catalog]")
        yield opened
    finally:
        opened.close()


def _browse_products(mesh: RunningMesh, times: int) -> None:
    with httpx.Client(base_url=mesh.edge_url, timeout=30) as edge:
        for _ in range(times):
            assert edge.get("/v1/products").status_code == 200


def _traces_of(mesh: RunningMesh, link: str) -> list[dict[str, str]]:
    console = mesh.state()["console"]["url"]
    with httpx.Client(follow_redirects=True, timeout=10) as client:
        client.get(console)  # the token, traded for the cookie
        base = console.split("/?")[0]
        found: list[dict[str, str]] = client.get(f"{base}/api/traces?link={link}").json()["traces"]
    return found


def test_the_map_shows_every_service_the_edge_and_nats(page: Page, mesh: RunningMesh) -> None:
    assert page.url.endswith("/"), "the token leaves the address bar"
    shown = page.eval_on_selector_all("#graph .node", "nodes => nodes.map(n => n.dataset.node)")
    services = {i["service"] for i in mesh.state()["instances"]}
    assert set(shown) == services | {"edge", "nats"}
    page.wait_for_function(
        "document.getElementById('updated').textContent.startsWith('live')", timeout=15_000
    )
    page.wait_for_selector("#graph .node.SERVING[data-node=catalog]")
    for instance in mesh.state()["instances"]:
        node = f"#graph .node[data-node={instance['service']}]"
        dot = f'{node} .replica[data-instance="{instance["instance"]}"]'
        assert page.get_attribute(dot, "class") == "replica SERVING"


def test_a_link_opens_its_traces_and_a_trace_its_waterfall(
    page: Page, mesh: RunningMesh, tmp_path: Path
) -> None:
    _browse_products(mesh, 5)
    wait_until(lambda: _traces_of(mesh, "edge->catalog"), "traces of edge->catalog", 30)
    page.wait_for_function(
        "document.querySelector('#graph text.link-label[data-link=\"edge->catalog\"]')"
        ".textContent.includes('/s')",
        timeout=15_000,
    )
    page.screenshot(path=str(tmp_path / "map.png"))
    assert (tmp_path / "map.png").read_bytes().startswith(b"\x89PNG")

    page.click('#graph text.link-label[data-link="edge->catalog"]')
    page.wait_for_selector("#trace-list tbody tr[data-trace]")
    assert page.is_visible("#traces")
    assert not page.is_visible("#map")
    assert page.input_value("#search select[name=link]") == "edge->catalog"

    page.click("#trace-list tbody tr[data-trace]")
    page.wait_for_selector("#spans .span")
    services = page.eval_on_selector_all("#spans .span .label", "ls => ls.map(l => l.textContent)")
    assert any(label.startswith("edge ") for label in services)
    assert any(label.startswith("catalog") for label in services)
    page.click("#spans .span:last-child")
    attributes = page.text_content("#attributes") or ""
    assert '"service"' in attributes
    assert '"attributes"' in attributes


def test_an_orders_saga_shows_its_steps(page: Page, mesh: RunningMesh) -> None:
    with httpx.Client(base_url=mesh.edge_url, timeout=30) as edge:
        admin = bearer(mesh.token("console-admin", "catalog:write", "inventory:write"))
        product_id = stocked_product(edge, admin, 3)
        _, token = customer(edge)
        order_id = place(edge, token, product_id)
        status = wait_until_terminal(edge, token, order_id)["status"]
    page.click("nav a[data-view=sagas]")
    row = f'#saga-list tr[data-order="{order_id}"]'
    page.wait_for_selector(row)
    assert page.text_content(f"{row} td:nth-child(2)") == status.removeprefix("ORDER_STATUS_")
    steps = page.eval_on_selector_all(f"{row} .step", "ss => ss.map(s => s.textContent)")
    assert steps[0] == "order placed"
    assert steps[-1] in ("order confirmed", "order cancelled")


def _in_a_thread(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to its end on a loop of its own: Playwright's sync API keeps one
    running in this thread."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, work()).result(timeout=60)


def _dead_letter(mesh: RunningMesh, order_id: str) -> int:
    """A dead letter of notifications for a real event on the bus (as the consumer that
    gave up writes one): its sequence in the dead-letter stream."""
    subject = "shop.orders.order_cancelled"
    cancelled = events_pb2.OrderCancelled(order_id=order_id, customer_id="c-console", reason="t")
    event = events.new_event("orders", order_id, cancelled).SerializeToString()

    async def write() -> int:
        async with mesh.jetstream() as js:
            kept = await js.publish(subject, event, headers={events.MSG_ID: str(uuid.uuid4())})
            letter = await js.publish(
                events.consumer_dead_subject("notifications"),
                event,
                headers={events.DEAD_SUBJECT: subject, events.DEAD_SEQUENCE: str(kept.seq),
                         events.DEAD_REASON: "failed 5 times: console test"},
            )  # fmt: skip
            return int(letter.seq)

    return _in_a_thread(write)


def test_a_dead_letter_is_replayed_only_once_confirmed(page: Page, mesh: RunningMesh) -> None:
    sequence = _dead_letter(mesh, f"o-console-{uuid.uuid4().hex[:8]}")
    page.click("nav a[data-view=dead-letters]")
    row = f'#letter-list tr[data-sequence="{sequence}"]'
    page.wait_for_selector(row)
    assert page.text_content(f"{row} td:nth-child(3)") == "notifications"

    asked: list[str] = []

    def dismiss(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.click(f"{row} button.replay")
    assert len(asked) == 1
    assert f"Replay dead letter {sequence}" in asked[0]
    assert _kept(mesh, sequence), "a dismissed replay replays nothing"

    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f"{row} button.replay")
    page.wait_for_selector(row, state="detached")
    assert f"replayed {sequence}" in (page.text_content("#letters-note") or "")
    assert not _kept(mesh, sequence)


def _kept(mesh: RunningMesh, sequence: int) -> bool:
    """Whether the dead-letter stream still holds letter `sequence`."""

    async def look() -> bool:
        async with mesh.jetstream() as js:
            try:
                await js.get_msg(events.DEAD_LETTER_STREAM, sequence)
            except NotFoundError:
                return False
            return True

    return _in_a_thread(look)


def test_an_instances_log_follows_new_lines(page: Page, mesh: RunningMesh) -> None:
    page.click("nav a[data-view=logs]")
    page.select_option("#log-filter select[name=instance]", "catalog-0")
    page.click("#log-filter button[type=submit]")
    page.wait_for_selector("#log-lines .log-line")
    before = page.locator("#log-lines .log-line").count()
    log = mesh.run_dir / "logs" / "catalog-0.log"
    marker = f"console follows {uuid.uuid4().hex}"
    with log.open("a") as appended:
        appended.write(f'{{"level": "ERROR", "message": "{marker}"}}\n')
    page.wait_for_selector(f"#log-lines .log-line.ERROR:has-text('{marker}')")
    assert page.locator("#log-lines .log-line").count() > before


def test_calls_turned_away_show_on_the_map_as_saturation(page: Page, mesh: RunningMesh) -> None:
    """More reads at once than catalog admits, for a few seconds: the edge's circuit
    breaker turns some away (503), or its rate limits do (429); the map marks the link or
    the edge saturated and says how many it turned away."""
    page.wait_for_function(
        "document.getElementById('updated').textContent.startsWith('live')", timeout=15_000
    )
    answered = _flood(mesh, seconds=4.0, callers=24, at_most=20_000)
    assert answered[503] + answered[429] > 0, f"nothing was turned away: {answered}"
    saturated = page.wait_for_selector(
        '#graph .link.saturated[data-link="edge->catalog"], #graph .node.saturated[data-node=edge]',
        timeout=20_000,
    )
    assert saturated is not None
    labels = page.eval_on_selector_all(
        '#graph .link-label[data-link="edge->catalog"], #graph .node[data-node=edge] .live',
        "parts => parts.map(p => p.textContent).join(' ')",
    )
    assert "turned away/s" in labels


def _flood(mesh: RunningMesh, seconds: float, callers: int, at_most: int) -> Counter[int]:
    """Read the products from `callers` threads for `seconds` (at most `at_most` reads in
    all); how many were answered with each status."""
    edge_url = mesh.edge_url  # once: each look runs `meshctl status`
    counts: Counter[int] = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def read() -> None:
        with httpx.Client(base_url=edge_url, timeout=10) as edge:
            while time.monotonic() < deadline:
                with lock:
                    if counts.total() >= at_most:
                        return
                status = edge.get("/v1/products").status_code
                with lock:
                    counts[status] += 1

    with concurrent.futures.ThreadPoolExecutor(max_workers=callers) as pool:
        for reader in [pool.submit(read) for _ in range(callers)]:
            reader.result(timeout=seconds + 30)  # a reader's failure is the test's
    return counts
