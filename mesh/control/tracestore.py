"""The local mesh's trace store: an OTLP/gRPC receiver that keeps spans in one SQLite file.

No Jaeger or collector binary is available to the local mesh, so it runs this small
process instead. Envoy (its OpenTelemetry tracer) and the Python services
(`OTLPSpanExporter`) export to it as to any OTLP/gRPC endpoint; `meshctl trace` and
`meshctl traces --slow` read the same file through `TraceStore`, from another process
(the file is in WAL mode, so they read while the receiver writes).

The file is bounded: after every export the oldest spans (by arrival) beyond `max_spans`
are deleted, so a mesh left running for days keeps the recent past and a fixed size.
The store keeps what the waterfall and the look-ups need: a span's identity, timing,
status, service and attributes. Events, links and scopes are dropped.

Run as `python -m mesh.control.tracestore --port P --db PATH [--max-spans N]`; it is served by
the shared runner, so it answers gRPC health like every app of the mesh.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1 import trace_pb2

from mesh.runtime.runner import Registration, ServiceRunner

log = logging.getLogger(__name__)

#: How many spans the store keeps unless told otherwise.
DEFAULT_MAX_SPANS = 50_000
#: Exports are short; a stopping receiver gives the ones in flight this long.
GRACE_SECONDS = 2.0
#: The width of the waterfall's timeline, in characters.
BAR_WIDTH = 30

_SERVICE_NAME = "service.name"
_SERVICE_INSTANCE_ID = "service.instance.id"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    seq INTEGER PRIMARY KEY,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT NOT NULL,
    service TEXT NOT NULL,
    instance TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    status TEXT NOT NULL,
    status_message TEXT NOT NULL,
    UNIQUE (trace_id, span_id)
);
CREATE TABLE IF NOT EXISTS span_attributes (
    span_seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (span_seq, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS span_attributes_by_value ON span_attributes (key, value);
"""

#: The `spans` columns, named after the `Span` fields they hold.
_COLUMNS = (
    "trace_id", "span_id", "parent_span_id", "service", "instance", "name", "kind",
    "start_ns", "end_ns", "status", "status_message",
)  # fmt: skip
_SPAN_COLUMNS = ", ".join(_COLUMNS)
#: Adds a span unless it is there already (a retried export); yields its `seq` if added.
_INSERT_SPAN = (
    f"INSERT INTO spans ({_SPAN_COLUMNS}) VALUES ({', '.join('?' * len(_COLUMNS))})"
    " ON CONFLICT DO NOTHING RETURNING seq"
)


@dataclass(frozen=True)
class Span:
    """One finished operation of one service, as the store keeps it."""

    trace_id: str
    span_id: str
    parent_span_id: str
    """Empty for a trace's root."""
    service: str
    instance: str
    """The exporting replica (`service.instance.id`), empty if it did not say."""
    name: str
    kind: str
    """SERVER, CLIENT, PRODUCER, CONSUMER, INTERNAL (or UNSPECIFIED)."""
    start_ns: int
    end_ns: int
    status: str
    """OK, ERROR or UNSET."""
    status_message: str
    attributes: dict[str, str]

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1_000_000


@dataclass(frozen=True)
class TraceSummary:
    """One line of `meshctl traces --slow`: a trace, its root operation and its cost."""

    trace_id: str
    root_service: str
    root_name: str
    start_ns: int
    duration_ms: float
    spans: int
    errors: int


SLOWEST = "slowest"
RECENT = "recent"


@dataclass(frozen=True)
class TraceSearch:
    """Which traces `TraceStore.summaries` lists, in which order, how many."""

    order: str = SLOWEST
    """`SLOWEST` (longest first) or `RECENT` (latest started first)."""
    services: tuple[str, ...] = ()
    """Only traces with a span of one of these services (`service.name`)."""
    calls: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    """Only traces in which a span of one of the first services is the parent of a span
    of one of the second: a call from one to the other."""
    trace_ids: tuple[str, ...] = ()
    """Only these traces."""
    errors_only: bool = False
    limit: int = 10

    def __post_init__(self) -> None:
        if self.order not in (SLOWEST, RECENT):
            raise ValueError(f"order is {SLOWEST!r} or {RECENT!r}, not {self.order!r}")

    def where(self) -> tuple[str, list[str]]:
        """The WHERE clause over `spans` and its parameters: every span of a trace that
        matches, not only the spans that made it match."""
        clauses: list[str] = []
        parameters: list[str] = []
        if self.trace_ids:
            clauses.append(f"trace_id IN ({_marks(self.trace_ids)})")
            parameters += self.trace_ids
        if self.services:
            services = _marks(self.services)
            clauses.append(
                f"trace_id IN (SELECT trace_id FROM spans WHERE service IN ({services}))"
            )
            parameters += self.services
        if self.calls is not None:
            callers, callees = self.calls
            clauses.append(
                "trace_id IN (SELECT child.trace_id FROM spans AS child JOIN spans AS parent"
                " ON parent.trace_id = child.trace_id AND parent.span_id = child.parent_span_id"
                f" WHERE parent.service IN ({_marks(callers)})"
                f" AND child.service IN ({_marks(callees)}))"
            )
            parameters += [*callers, *callees]
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), parameters


def _marks(values: Sequence[str]) -> str:
    return ", ".join("?" * len(values))


def _text(value: AnyValue) -> str:
    """An attribute value as text: scalars as written, lists and maps as JSON, booleans
    lower-case and bytes in hex, as OTLP's JSON encoding spells them."""
    kind = value.WhichOneof("value")
    if kind is None:
        return ""
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "bytes_value":
        return value.bytes_value.hex()
    if kind == "array_value":
        return json.dumps([_text(item) for item in value.array_value.values])
    if kind == "kvlist_value":
        return json.dumps({item.key: _text(item.value) for item in value.kvlist_value.values})
    return str(getattr(value, kind))


def _span(span: trace_pb2.Span, service: str, instance: str) -> Span:
    return Span(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        service=service,
        instance=instance,
        name=span.name,
        kind=trace_pb2.Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        status=trace_pb2.Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
        status_message=span.status.message,
        attributes={attribute.key: _text(attribute.value) for attribute in span.attributes},
    )


def _spans_of(resource_spans: trace_pb2.ResourceSpans) -> Iterator[Span]:
    """Every span of one exporter's batch, named after the exporting service."""
    resource = {kv.key: _text(kv.value) for kv in resource_spans.resource.attributes}
    service = resource.get(_SERVICE_NAME, "")
    instance = resource.get(_SERVICE_INSTANCE_ID, "")
    for scope_spans in resource_spans.scope_spans:
        for span in scope_spans.spans:
            yield _span(span, service, instance)


class TraceStore:
    """The spans of one SQLite file; see the module docstring.

    Attributes live in their own table of (span, key, value) rows, indexed by (key,
    value), rather than in a JSON column: `traces_with` then finds an order's trace by
    any attribute through the index, without the store having to know in advance which
    keys (`shop.order_id` today, a request id tomorrow) will be looked up.

    Spans are numbered by arrival (`seq`, SQLite's rowid). New rows take the largest
    number plus one and only the oldest are ever deleted, so the numbers stay contiguous
    and keeping the newest `max_spans` is one range delete, not a count.

    One connection serves every thread (the receiver writes from worker threads so the
    event loop keeps answering); a lock takes turns on it.
    """

    def __init__(self, path: Path, max_spans: int = DEFAULT_MAX_SPANS) -> None:
        if max_spans < 1:
            raise ValueError(f"max_spans must be positive, not {max_spans}")
        self.path = path
        self.max_spans = max_spans
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(path, timeout=10, check_same_thread=False)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.executescript(_SCHEMA)

    def add(self, resource_spans: Iterable[trace_pb2.ResourceSpans]) -> int:
        """Store every span of an export; return how many were new (a span the exporter
        sent again, after a lost response, is kept once). Then drop the oldest spans
        beyond `max_spans`."""
        spans = [span for batch in resource_spans for span in _spans_of(batch)]
        with self._lock, self._connection:
            added = sum(self._insert(span) for span in spans)
            self._evict()
        return added

    def _insert(self, span: Span) -> bool:
        values = [getattr(span, column) for column in _COLUMNS]
        row = self._connection.execute(_INSERT_SPAN, values).fetchone()
        if row is None:
            return False
        self._connection.executemany(
            "INSERT OR REPLACE INTO span_attributes (span_seq, key, value) VALUES (?, ?, ?)",
            [(row[0], key, value) for key, value in span.attributes.items()],
        )
        return True

    def _evict(self) -> None:
        (newest,) = self._connection.execute("SELECT MAX(seq) FROM spans").fetchone()
        if newest is None:
            return
        oldest_kept = newest - self.max_spans + 1
        self._connection.execute("DELETE FROM span_attributes WHERE span_seq < ?", (oldest_kept,))
        self._connection.execute("DELETE FROM spans WHERE seq < ?", (oldest_kept,))

    def trace(self, trace_id: str) -> list[Span]:
        """The spans of one trace, earliest first; empty if the store has none of it."""
        with self._lock:
            rows = self._connection.execute(
                f"SELECT seq, {_SPAN_COLUMNS} FROM spans WHERE trace_id = ? ORDER BY start_ns, seq",
                (trace_id,),
            ).fetchall()
            attributes: dict[int, dict[str, str]] = defaultdict(dict)
            for seq, key, value in self._connection.execute(
                "SELECT span_seq, key, value FROM span_attributes"
                " WHERE span_seq IN (SELECT seq FROM spans WHERE trace_id = ?)",
                (trace_id,),
            ):
                attributes[seq][key] = value
        return [
            Span(**dict(zip(_COLUMNS, values, strict=True)), attributes=attributes[seq])
            for seq, *values in rows
        ]

    def traces_with(self, attribute: str, value: str) -> list[str]:
        """The ids of the traces with a span whose `attribute` is `value`, the latest
        started first."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT spans.trace_id FROM span_attributes"
                " JOIN spans ON spans.seq = span_attributes.span_seq"
                " WHERE span_attributes.key = ? AND span_attributes.value = ?"
                " GROUP BY spans.trace_id ORDER BY MAX(spans.start_ns) DESC",
                (attribute, value),
            ).fetchall()
        return [trace_id for (trace_id,) in rows]

    def summaries(self, search: TraceSearch | None = None) -> list[TraceSummary]:
        """The traces `search` asks for (all, the slowest first, by default): each from its
        first start to its last end, with its root operation, spans and errors."""
        search = search or TraceSearch()
        where, parameters = search.where()
        order = "duration_ns DESC" if search.order == SLOWEST else "first_ns DESC"
        having = " HAVING SUM(status = 'ERROR') > 0" if search.errors_only else ""
        with self._lock:
            rows = self._connection.execute(
                "SELECT trace_id, MIN(start_ns) AS first_ns,"
                " MAX(end_ns) - MIN(start_ns) AS duration_ns, COUNT(*), SUM(status = 'ERROR')"
                f" FROM spans{where} GROUP BY trace_id{having}"
                f" ORDER BY {order}, trace_id LIMIT ?",
                (*parameters, search.limit),
            ).fetchall()
            return [
                TraceSummary(trace_id, *self._root(trace_id), start, duration / 1e6, spans, errors)
                for trace_id, start, duration, spans, errors in rows
            ]

    def _root(self, trace_id: str) -> tuple[str, str]:
        """The service and name of a trace's root span; of its earliest span if the root
        is not in the store (not exported yet, evicted, or the caller's own)."""
        service, name = self._connection.execute(
            "SELECT service, name FROM spans WHERE trace_id = ?"
            " ORDER BY parent_span_id != '', start_ns LIMIT 1",
            (trace_id,),
        ).fetchone()
        return str(service), str(name)

    def close(self) -> None:
        with self._lock:
            self._connection.close()


def _tree(spans: Sequence[Span]) -> list[tuple[int, Span]]:
    """The spans depth first, each with its depth: children under their parent, siblings
    by start time, a span whose parent is not in the trace at the top level."""
    ids = {span.span_id for span in spans}
    children: dict[str, list[Span]] = defaultdict(list)
    roots: list[Span] = []
    for span in sorted(spans, key=lambda span: (span.start_ns, span.span_id)):
        if span.parent_span_id in ids:
            children[span.parent_span_id].append(span)
        else:
            roots.append(span)
    rows: list[tuple[int, Span]] = []

    def visit(span: Span, depth: int) -> None:
        rows.append((depth, span))
        for child in children[span.span_id]:
            visit(child, depth + 1)

    for root in roots:
        visit(root, 0)
    return rows


def _bar(span: Span, trace_start_ns: int, trace_ns: int) -> str:
    """Where `span` ran on a timeline `BAR_WIDTH` characters wide; a span shorter than
    one character is a thin tick, so it still shows where it ran."""
    scale = BAR_WIDTH / max(trace_ns, 1)
    first = min(round((span.start_ns - trace_start_ns) * scale), BAR_WIDTH - 1)
    last = round((span.end_ns - trace_start_ns) * scale)
    cells = "█" * (last - first) if last > first else "▏"
    return (" " * first + cells).ljust(BAR_WIDTH)


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


#: The status column: errors stand out in capitals, an unset status stays blank.
_STATUS_LABELS = {"OK": "ok", "ERROR": "ERROR"}


def render_waterfall(spans: Sequence[Span]) -> str:
    """The trace as a waterfall for a terminal: a summary line, then one line per span
    (start offset and duration in ms, service, operation indented by depth, status,
    timeline, and an error's message). Deterministic: no colours, a fixed width."""
    if not spans:
        return "no spans"
    trace_start = min(span.start_ns for span in spans)
    trace_ns = max(span.end_ns for span in spans) - trace_start
    errors = sum(span.status == "ERROR" for span in spans)
    rows = _tree(spans)
    operations = ["  " * depth + span.name for depth, span in rows]
    service_width = max(len("service"), *(len(span.service) for span in spans))
    operation_width = max(len("operation"), *(len(operation) for operation in operations))
    lines = [
        f"trace {spans[0].trace_id}: {_counted(len(spans), 'span')}, "
        f"{trace_ns / 1e6:.2f} ms, {_counted(errors, 'error')}",
        f"{'start ms':>9} {'dur ms':>9}  {'service':<{service_width}}  "
        f"{'operation':<{operation_width}}  {'status':<6} timeline",
    ]
    for (_, span), operation in zip(rows, operations, strict=True):
        offset_ms = (span.start_ns - trace_start) / 1e6
        status = _STATUS_LABELS.get(span.status, "")
        line = (
            f"{offset_ms:>9.2f} {span.duration_ms:>9.2f}  {span.service:<{service_width}}  "
            f"{operation:<{operation_width}}  {status:<6} |{_bar(span, trace_start, trace_ns)}|"
        )
        if span.status == "ERROR" and span.status_message:
            line += f" {span.status_message}"
        lines.append(line)
    return "\n".join(lines)


class TraceReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """The OTLP/gRPC trace service: every export goes into the store."""

    def __init__(self, store: TraceStore) -> None:
        self._store = store

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        # SQLite blocks; a worker thread keeps the loop free for other exports and health.
        await asyncio.to_thread(self._store.add, request.resource_spans)
        return trace_service_pb2.ExportTraceServiceResponse()


def trace_store_runner(store: TraceStore, port: int = 0) -> ServiceRunner:
    """The shared runner serving a receiver into `store` on loopback `port`."""
    receiver = Registration.of(TraceReceiver(store), trace_service_pb2, trace_service_pb2_grpc)
    return ServiceRunner([receiver], port=port, grace=GRACE_SECONDS)


async def serve(port: int, path: Path, max_spans: int) -> None:
    """Receive spans into the file at `path` until SIGTERM or SIGINT, then stop
    gracefully and close the file."""
    store = TraceStore(path, max_spans)
    try:
        log.info("trace store on 127.0.0.1:%d, %d spans kept in %s", port, max_spans, path)
        await trace_store_runner(store, port).serve()
    finally:
        store.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mesh.control.tracestore")
    parser.add_argument("--port", type=int, required=True, help="the OTLP/gRPC port")
    parser.add_argument("--db", type=Path, required=True, help="the SQLite file")
    parser.add_argument(
        "--max-spans",
        type=int,
        default=DEFAULT_MAX_SPANS,
        help=f"how many of the newest spans to keep (default {DEFAULT_MAX_SPANS})",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s tracestore %(message)s"
    )
    asyncio.run(serve(args.port, args.db, args.max_spans))


if __name__ == "__main__":
    main()
