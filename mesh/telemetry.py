"""Traces and logs of a service process: OpenTelemetry over OTLP/gRPC, JSON log lines.

* **Traces.** `setup_tracing` installs a tracer provider that names the process
  (`service.name`, `service.instance.id`) and exports to `OTEL_EXPORTER_OTLP_ENDPOINT`
  (the OpenTelemetry variable; the local mesh points it at its trace store, compose and
  Kubernetes at a collector). Without it, spans are still made and propagated, just
  not exported. W3C trace context travels in gRPC metadata (the runner's server
  interceptor and `instrumented_channel`'s client interceptors) and, for events, in
  the envelope's `trace_context` and the NATS message headers (`event_context`).
* **Logs.** `setup_logging` writes one JSON object per line: time, level, service,
  instance, logger, message, and the `trace_id` / `span_id` of the span the line was
  logged in, so `meshctl logs SERVICE --trace ID` finds a request's lines.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

import grpc
from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from mesh.topology import TelemetrySettings

#: Where spans go (host:port of an OTLP/gRPC receiver); unset: nowhere.
ENDPOINT_VARIABLE = "OTEL_EXPORTER_OTLP_ENDPOINT"
#: The span attribute that names the order a span worked on (`meshctl trace ORDER_ID`).
ORDER_ID = "shop.order_id"

tracer = trace.get_tracer("shop.mesh")


def setup_tracing(service: str, instance: str) -> TracerProvider:
    """Install the process's tracer provider (see the module docstring); shut it down
    (`provider.shutdown()`) on exit to flush the last spans."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.instance.id": instance})
    )
    endpoint = os.environ.get(ENDPOINT_VARIABLE, "").strip()
    if endpoint:
        exporter = OTLPSpanExporter(endpoint=endpoint.removeprefix("http://"), insecure=True)
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


class _UnaryTracing(grpc.aio.ServerInterceptor):
    """OpenTelemetry's server interceptor, for unary-unary methods only.

    Every RPC of the contracts is unary; the streaming ones a server also serves (health
    `Watch`, reflection) are coroutines writing to their context, which the
    instrumentation mistakes for async generators and breaks. They pass untraced.
    """

    def __init__(self) -> None:
        self._traced: grpc.aio.ServerInterceptor = aio_server_interceptor()  # type: ignore[no-untyped-call]

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler

        async def resolved(_: grpc.HandlerCallDetails) -> Any:
            return handler

        return await self._traced.intercept_service(resolved, handler_call_details)


def tracing_environment(settings: TelemetrySettings, endpoint: str) -> dict[str, str]:
    """The OpenTelemetry variables that give a service mesh.yaml's `telemetry:`: spans
    to `endpoint`, sampled as the Envoys sample (following the caller's decision); or
    the SDK switched off."""
    if not settings.tracing:
        return {"OTEL_SDK_DISABLED": "true"}
    return {
        ENDPOINT_VARIABLE: endpoint,
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": f"{settings.sampling_percent / 100:g}",
    }


def server_interceptor() -> grpc.aio.ServerInterceptor:
    """A server span per RPC, the caller's trace context continued (for `ServiceRunner`)."""
    return _UnaryTracing()


def instrumented_channel(address: str) -> grpc.aio.Channel:
    """A channel to `address` whose calls are client spans and carry the trace context."""
    interceptors = aio_client_interceptors()  # type: ignore[no-untyped-call]
    return grpc.aio.insecure_channel(address, interceptors=interceptors)


def inject(carrier: MutableMapping[str, str]) -> None:
    """Write the current trace context (`traceparent`, `tracestate`) into `carrier`."""
    propagate.inject(carrier)


def event_context(*carriers: Mapping[str, str] | None) -> Context:
    """The trace context in the first carrier that has one (NATS headers, then the
    envelope's `trace_context`); an empty context if none does."""
    for carrier in carriers:
        if carrier and "traceparent" in carrier:
            return propagate.extract(dict(carrier))
    return context.Context()


def mark_order(order_id: str) -> None:
    """Note on the current span which order it worked on."""
    if order_id:
        trace.get_current_span().set_attribute(ORDER_ID, order_id)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the trace and span of the current span."""

    def __init__(self, service: str, instance: str) -> None:
        super().__init__()
        self._service = service
        self._instance = instance

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self._service,
            "instance": self._instance,
            "logger": record.name,
            "message": record.getMessage(),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            line["trace_id"] = trace.format_trace_id(span.trace_id)
            line["span_id"] = trace.format_span_id(span.span_id)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line)


def setup_logging(service: str, instance: str, level: int = logging.INFO) -> None:
    """Log JSON lines (see `JsonFormatter`) to standard error."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service, instance))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def parse_log_line(line: str) -> dict[str, str] | None:
    """A JSON log line's fields, or None for any other line (a traceback, say)."""
    try:
        fields = json.loads(line)
    except ValueError:
        return None
    return {k: str(v) for k, v in fields.items()} if isinstance(fields, dict) else None


def readable(line: str) -> str:
    """A JSON log line for a terminal: `time level logger: message [trace id]`."""
    fields = parse_log_line(line)
    if fields is None:
        return line
    trace_id = f"  trace={fields['trace_id']}" if "trace_id" in fields else ""
    return (
        f"{fields.get('time', '')[11:23]} {fields.get('level', ''):<7} "
        f"{fields.get('logger', '')}: {fields.get('message', '')}{trace_id}"
    )
