"""The trace store receiving real OpenTelemetry SDK exports, in-process and as a process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, format_trace_id

from mesh.control.plan import free_port
from mesh.control.tracestore import TraceStore, trace_store_runner

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING


def exporting_to(port: int, service: str) -> TracerProvider:
    """A service's tracer provider, exporting to the trace store on `port`."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.instance.id": f"{service}-0"})
    )
    exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def place_order(provider: TracerProvider, order_id: str) -> str:
    """A server span with a client span below it that names the order; the trace id."""
    tracer = provider.get_tracer("test")
    with (
        tracer.start_as_current_span("PlaceOrder", kind=SpanKind.SERVER) as parent,
        tracer.start_as_current_span("Reserve", kind=SpanKind.CLIENT) as child,
    ):
        child.set_attribute("shop.order_id", order_id)
    return format_trace_id(parent.get_span_context().trace_id)


def assert_order_trace(store: TraceStore, trace_id: str, order_id: str) -> None:
    parent, child = store.trace(trace_id)
    assert (parent.name, parent.kind, parent.parent_span_id) == ("PlaceOrder", "SERVER", "")
    assert (child.name, child.kind, child.parent_span_id) == ("Reserve", "CLIENT", parent.span_id)
    assert {parent.service, child.service} == {"orders"}
    assert {parent.instance, child.instance} == {"orders-0"}
    assert child.attributes["shop.order_id"] == order_id
    assert parent.start_ns <= child.start_ns <= child.end_ns <= parent.end_ns
    assert store.traces_with("shop.order_id", order_id) == [trace_id]


@pytest.fixture
async def receiving(tmp_path: Path) -> AsyncIterator[tuple[TraceStore, int]]:
    """A trace store served in this process: the store and its port."""
    store = TraceStore(tmp_path / "traces.db")
    runner = trace_store_runner(store, free_port())
    port = await runner.start()
    try:
        yield store, port
    finally:
        await runner.stop(0)
        store.close()


async def test_keeps_the_spans_an_sdk_exports(receiving: tuple[TraceStore, int]) -> None:
    store, port = receiving
    provider = exporting_to(port, "orders")
    try:
        trace_id = place_order(provider, "o-42")
        # The exporter blocks its thread on the call this event loop has to answer.
        assert await asyncio.to_thread(provider.force_flush)
    finally:
        await asyncio.to_thread(provider.shutdown)

    assert_order_trace(store, trace_id, "o-42")


async def test_reports_serving_to_the_supervisor(receiving: tuple[TraceStore, int]) -> None:
    _, port = receiving
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest())
    assert response.status == SERVING


def wait_until_serving(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(), timeout=20, wait_for_ready=True)
    assert response.status == SERVING


def test_runs_as_a_process_that_others_read_and_stops_cleanly(tmp_path: Path) -> None:
    port, db = free_port(), tmp_path / "traces.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "mesh.control.tracestore", "--port", str(port), "--db", str(db),
         "--max-spans", "1000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until_serving(port)
        provider = exporting_to(port, "orders")
        try:
            trace_id = place_order(provider, "o-43")
            assert provider.force_flush()
        finally:
            provider.shutdown()
        reader = TraceStore(db)
        try:
            assert_order_trace(reader, trace_id, "o-43")
        finally:
            reader.close()
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            _, log = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise

    assert process.returncode == 0, log
    assert f"trace store on 127.0.0.1:{port}, 1000 spans kept in {db}" in log
