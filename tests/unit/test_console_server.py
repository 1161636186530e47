"""The console's HTTP server in-process: who it answers, and its API's answers."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mesh.control.console.context import Console
from mesh.control.console.graph import service_map
from mesh.control.console.live import Live
from mesh.control.console.server import COOKIE, make_app
from mesh.control.plan import free_port, make_plan
from mesh.control.topology import parse
from mesh.control.tracestore import TraceStore
from tests.unit.test_tracestore import batch, otlp_span, trace_id

TOPOLOGY = """
services:
  catalog: {}
  orders:
    calls:
      catalog: {methods: all}
edge:
  expose: [catalog, orders]
"""
TOKEN = "the-token"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    topology = parse(TOPOLOGY)
    ports = itertools.count(21000)
    plan = make_plan(topology, tmp_path, lambda: next(ports))
    graph = service_map(topology, plan)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "catalog-0.log").write_text("")
    (tmp_path / "traces").mkdir()
    store = TraceStore(tmp_path / "traces" / "traces.db")
    store.add([batch("edge", otlp_span(1, 1, name="GET /v1/products", start_ms=0, end_ms=5))])
    store.add([batch("catalog-sidecar", otlp_span(1, 2, parent=1, start_ms=1, end_ms=4))])
    store.close()
    port = free_port()
    console = Console(graph, Live(graph, tmp_path, {}), tmp_path, TOKEN, port)
    server = TestServer(make_app(console), host="127.0.0.1", port=port)
    async with TestClient(server) as test_client:
        yield test_client


async def _signed_in(client: TestClient) -> TestClient:  # type: ignore[type-arg]
    response = await client.get(f"/?token={TOKEN}", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/"
    cookie = response.headers["Set-Cookie"]
    assert f"{COOKIE}={TOKEN}" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    return client


async def test_without_the_token_nothing_but_health_answers(client: TestClient) -> None:  # type: ignore[type-arg]
    for path in ("/", "/api/map", "/api/traces", "/static/console.js", "/?token=wrong"):
        response = await client.get(path)
        assert response.status == 401, path
        assert "meshctl status" in (await response.json())["error"]
    health = await client.get("/healthz")
    assert health.status == 200
    assert await health.json() == {"status": "serving"}


async def test_the_token_is_traded_for_a_cookie_that_opens_the_page(client: TestClient) -> None:  # type: ignore[type-arg]
    await _signed_in(client)
    page = await client.get("/")
    assert page.status == 200
    assert '<svg id="graph"' in await page.text()
    script = await client.get("/static/console.js")
    assert script.status == 200


async def test_another_host_name_is_refused_even_with_the_token(client: TestClient) -> None:  # type: ignore[type-arg]
    await _signed_in(client)
    response = await client.get("/api/map", headers={"Host": "rebound.example:80"})
    assert response.status == 403
    assert "127.0.0.1" in (await response.json())["error"]


async def test_the_map_lists_nodes_and_links_without_admin_sockets(client: TestClient) -> None:  # type: ignore[type-arg]
    await _signed_in(client)
    body = await (await client.get("/api/map")).json()
    assert {node["id"] for node in body["nodes"]} == {"edge", "catalog", "orders", "nats"}
    assert {link["id"] for link in body["links"]} >= {"edge->catalog", "orders->catalog"}
    assert all("measured_at" not in link for link in body["links"])


async def test_traces_are_found_by_link_and_drawn_by_id(client: TestClient) -> None:  # type: ignore[type-arg]
    await _signed_in(client)
    found = await (await client.get("/api/traces?link=edge->catalog&order=recent")).json()
    assert [t["trace_id"] for t in found["traces"]] == [trace_id(1)]
    none = await (await client.get("/api/traces?link=orders->catalog")).json()
    assert none == {"traces": []}
    spans = await (await client.get(f"/api/traces/{trace_id(1)}")).json()
    assert [s["service"] for s in spans["spans"]] == ["edge", "catalog-sidecar"]


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("service=billing", "no service 'billing'"),
        ("link=edge->billing", "no link 'edge->billing'"),
        ("order=fastest", "order is 'slowest' or 'recent'"),
        ("limit=0", "limit is between 1 and 200"),
        ("limit=many", "limit is a number"),
    ],
)
async def test_a_bad_search_is_a_400_that_says_why(
    client: TestClient,  # type: ignore[type-arg]
    query: str,
    says: str,
) -> None:
    await _signed_in(client)
    response = await client.get(f"/api/traces?{query}")
    assert response.status == 400
    assert says in (await response.json())["error"]


async def test_a_malformed_or_unknown_trace_id_is_told_apart(client: TestClient) -> None:  # type: ignore[type-arg]
    await _signed_in(client)
    assert (await client.get("/api/traces/not-hex")).status == 400
    missing = await client.get(f"/api/traces/{'0' * 32}")
    assert missing.status == 404
    assert "no trace" in (await missing.json())["error"]


async def test_the_live_stream_starts_with_the_latest_figures(client: TestClient) -> None:  # type: ignore[type-arg]
    await _signed_in(client)
    response = await client.get("/api/live")
    assert response.headers["Content-Type"] == "text/event-stream"
    first = await response.content.readuntil(b"\n\n")
    assert first.startswith(b"event: figures\ndata: {")
    response.close()


async def test_a_path_or_method_it_does_not_have_is_a_json_error(client: TestClient) -> None:  # type: ignore[type-arg]
    await _signed_in(client)
    missing = await client.get("/api/nothing-here")
    assert missing.status == 404
    assert (await missing.json()) == {"error": "Not Found"}
    wrong = await client.post("/api/map", json={})
    assert wrong.status == 405
    assert "error" in await wrong.json()


async def test_a_change_needs_a_json_body(client: TestClient) -> None:  # type: ignore[type-arg]
    await _signed_in(client)
    response = await client.post("/api/dead-letters/replay", data="sequence=1")
    assert response.status == 415
    assert "JSON body" in (await response.json())["error"]


async def test_without_nats_the_event_views_say_so(client: TestClient) -> None:  # type: ignore[type-arg]
    await _signed_in(client)
    for response in (
        await client.get("/api/dead-letters"),
        await client.get("/api/sagas"),
        await client.post("/api/dead-letters/replay", json={}),
    ):
        assert response.status == 503
        assert "NATS does not answer" in (await response.json())["error"]


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/api/sagas?limit=0", 400, "limit is between 1"),
        ("/api/sagas?stuck_after=soon", 400, "stuck_after is a number of seconds, not 'soon'"),
        ("/api/sagas?stuck_after=nan", 400, "stuck_after is between 0 and 86400 s, not nan"),
        ("/api/logs/billing-0", 404, "no log of an instance 'billing-0'"),
        ("/api/logs/catalog-0?level=LOUD", 400, "a level is one of"),
        ("/api/logs/catalog-0?lines=0", 400, "lines is between 1"),
        ("/api/logs/catalog-0/follow?offset=end", 400, "offset is a number"),
    ],
)
async def test_a_bad_question_to_the_other_views_is_a_4xx_that_says_why(
    client: TestClient,  # type: ignore[type-arg]
    path: str,
    status: int,
    says: str,
) -> None:
    await _signed_in(client)
    response = await client.get(path)
    assert response.status == status
    assert says in (await response.json())["error"]


async def test_a_log_is_read_filtered_by_level(client: TestClient, tmp_path: Path) -> None:  # type: ignore[type-arg]
    await _signed_in(client)
    logs = tmp_path / "logs"
    (logs / "catalog-0.log").write_text(
        '{"level": "INFO", "message": "serving"}\n{"level": "ERROR", "message": "failed"}\n'
    )
    assert await (await client.get("/api/logs")).json() == {"instances": ["catalog-0"]}
    found = await (await client.get("/api/logs/catalog-0?level=ERROR")).json()
    assert found["lines"] == ['{"level": "ERROR", "message": "failed"}']
    assert found["offset"] == (logs / "catalog-0.log").stat().st_size


async def test_a_trace_store_that_cannot_be_read_is_a_503(
    client: TestClient,  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    await _signed_in(client)
    (tmp_path / "traces" / "traces.db").unlink()
    (tmp_path / "traces").rmdir()  # no directory: SQLite cannot even make the file
    for path in ("/api/traces", f"/api/traces/{trace_id(1)}"):
        response = await client.get(path)
        assert response.status == 503
        assert "trace store" in (await response.json())["error"]
