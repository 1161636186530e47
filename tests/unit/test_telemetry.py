"""Log lines carry the trace and span of the work they were logged in."""

from __future__ import annotations

import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from mesh.runtime.telemetry import JsonFormatter, readable


def test_a_log_line_in_a_span_names_its_trace_and_span() -> None:
    tracer = TracerProvider().get_tracer("test")
    formatter = JsonFormatter("orders", "orders-0")
    record = logging.LogRecord("shop", logging.INFO, __file__, 1, "order %s placed", ("o1",), None)
    with tracer.start_as_current_span("PlaceOrder") as span:
        line = json.loads(formatter.format(record))
    context = span.get_span_context()
    assert line["message"] == "order o1 placed"
    assert (line["service"], line["instance"], line["level"]) == ("orders", "orders-0", "INFO")
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"
    outside = json.loads(formatter.format(record))
    assert "trace_id" not in outside


def test_readable_shows_a_json_line_compactly_and_leaves_other_lines_alone() -> None:
    line = json.dumps({"time": "2026-11-26T09:00:01.250+00:00", "level": "INFO",
                       "logger": "shop", "message": "hello", "trace_id": "ab" * 16})  # fmt: skip
    assert readable(line) == f"09:00:01.250 INFO    shop: hello  trace={'ab' * 16}"
    assert readable("Traceback (most recent call last):") == "Traceback (most recent call last):"
