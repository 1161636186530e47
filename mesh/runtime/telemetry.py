"""Traces and logs of a service process: OpenTelemetry over OTLP/gRPC, JSON log lines.

* **Traces.** `setup_tracing` installs a tracer provider that names the process
  (`service.name`, `service.instance.id`) and exports to `OTEL_EXPORTER_OTLP_ENDPOINT`
  (the OpenTelemetry variable; the local mesh points it at its trace store, compose and
  Kubernetes at a collector). Without it, spans are still made and propagated, just
  not exported. W3C trace context travels in gRPC metadata (the runner's server
  interceptor and `client_interceptors`) and, for events, in
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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

#: Where spans go (host:port of an OTLP/gRPC receiver); unset: nowhere.
ENDPOINT_VARIABLE = "OTEL_EXPORTER_OTLP_ENDPOINT"
#: The span attribute that names the order a span worked on (`meshctl trace ORDER_ID`).
ORDER_ID = "shop.order_id"

tracer = trace.get_tracer("shop.mesh")

#: A unary method's behavior, as a gRPC server calls it: (request, context) -> response.
Behavior = Callable[[Any, Any], Awaitable[Any]]


@dataclass(frozen=True)
class TelemetrySettings:
    """Tracing of every Envoy and app: on or off, and the share of traces started that
    are kept (a caller's decision is always followed)."""

    tracing: bool = True
    sampling_percent: float = 100.0
    #: `host:port` of an OTLP/gRPC collector (Jaeger, an OpenTelemetry Collector);
    #: empty: the mesh's own trace store (`meshctl trace` reads only that one).
    otlp_endpoint: str = ""

    def endpoint(self) -> tuple[str, int] | None:
        """The collector's host and port, if one is configured."""
        if not self.otlp_endpoint:
            return None
        host, _, port = self.otlp_endpoint.rpartition(":")
        return host, int(port)


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


def traced(behavior: Behavior, method: str) -> Behavior:
    """`behavior` (a unary method's) in a server span named after `method`, continuing the
    caller's trace context (the runner's `mesh.runtime.interceptors.MeshInterceptor`).

    A call the sampler leaves out gets a non-recording span: the trace context still
    flows on, and nothing else is computed for it. A recorded span notes how long the
    caller gave the call (`DEADLINE_ATTRIBUTE`, in ms), when it gave a deadline.
    """
    service, _, name = method.lstrip("/").partition("/")
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}

    async def call(request: Any, servicer_context: Any) -> Any:
        parent = propagate.extract(dict(servicer_context.invocation_metadata() or ()))
        with tracer.start_as_current_span(
            method,
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            if span.is_recording():
                _record_deadline(span, servicer_context.time_remaining())
            try:
                return await behavior(request, servicer_context)
            finally:
                if span.is_recording():
                    _record_status(span, servicer_context.code())

    return call


#: The server span's attribute of the time its caller gave it (`grpc-timeout`), in ms.
DEADLINE_ATTRIBUTE = "shop.rpc.deadline_ms"


def _record_deadline(span: trace.Span, left: float | None) -> None:
    if left is not None:
        span.set_attribute(DEADLINE_ATTRIBUTE, round(left * 1000))


def _record_status(span: trace.Span, code: grpc.StatusCode | None) -> None:
    """The gRPC status a call ended with, on its span; any but OK is an error."""
    code = code or grpc.StatusCode.OK
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is not grpc.StatusCode.OK:
        span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that make a channel's calls client spans carrying the trace context."""
    interceptors: list[grpc.aio.ClientInterceptor] = aio_client_interceptors()  # type: ignore[no-untyped-call]
    return interceptors


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
