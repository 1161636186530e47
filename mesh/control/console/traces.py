"""The console's traces: searched by order, trace id, service, link, errors; drawn by id."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

from aiohttp import web

from mesh.control.console.context import CONSOLE, count, error
from mesh.control.console.graph import EDGE, ServiceMap
from mesh.control.envoy.tracing import sidecar_name
from mesh.control.tracestore import SLOWEST, TraceSearch, TraceStore

#: The most traces a search lists.
MAX_TRACES = 200


def span_services(node: str) -> tuple[str, ...]:
    """The `service.name`s of a map node's spans: its app's and its sidecar's."""
    return (EDGE,) if node == EDGE else (node, sidecar_name(node))


def trace_search(query: dict[str, str], graph: ServiceMap) -> TraceSearch:
    """A search from the API's query parameters; ValueError says what is wrong."""
    nodes = {node.id for node in graph.nodes}
    services: tuple[str, ...] = ()
    if query.get("service"):
        if query["service"] not in nodes:
            raise ValueError(f"no service {query['service']!r} in this mesh")
        services = span_services(query["service"])
    calls = None
    if query.get("link"):
        try:
            link = graph.link(query["link"])
        except KeyError:
            raise ValueError(f"no link {query['link']!r} in this mesh") from None
        calls = (span_services(link.source), span_services(link.target))
    limit = count(query, "limit", 50, MAX_TRACES)
    return TraceSearch(
        order=query.get("order", SLOWEST),
        services=services,
        calls=calls,
        errors_only=query.get("errors") in ("1", "true"),
        limit=limit,
    )


async def traces(request: web.Request) -> web.Response:
    """Trace summaries: by `order` (slowest, recent), `service`, `link`, `errors`; or the
    traces of an order (`order_id`)."""
    console = request.app[CONSOLE]
    query = dict(request.query)
    try:
        search = trace_search(query, console.graph)
    except ValueError as problem:
        return error(400, str(problem))
    try:
        summaries = await asyncio.to_thread(
            _summaries, console.traces, search, query.get("order_id")
        )
    except sqlite3.Error:
        return _unreadable()
    return web.json_response({"traces": [dataclasses.asdict(s) for s in summaries]})


def _unreadable() -> web.Response:
    return error(503, "the trace store's file cannot be read yet; `meshctl status` shows the store")


def _summaries(path: Path, search: TraceSearch, order_id: str | None) -> list[Any]:
    store = TraceStore(path)
    try:
        if order_id:
            found = tuple(store.traces_with("shop.order_id", order_id))[:MAX_TRACES]
            if not found:
                return []
            search = dataclasses.replace(search, trace_ids=found)
        return store.summaries(search)
    finally:
        store.close()


async def trace(request: web.Request) -> web.Response:
    trace_id = request.match_info["trace_id"]
    if len(trace_id) != 32 or not all(c in "0123456789abcdef" for c in trace_id):
        return error(400, "a trace id is 32 lower-case hex digits")
    try:
        spans = await asyncio.to_thread(_spans, request.app[CONSOLE].traces, trace_id)
    except sqlite3.Error:
        return _unreadable()
    if not spans:
        return error(404, f"no trace {trace_id} in the trace store")
    return web.json_response({"spans": spans})


def _spans(path: Path, trace_id: str) -> list[dict[str, Any]]:
    store = TraceStore(path)
    try:
        return [dataclasses.asdict(span) for span in store.trace(trace_id)]
    finally:
        store.close()
