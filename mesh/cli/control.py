"""`meshctl status / logs / trace / certs / dlq`: looking into a local mesh.

The run directory (default `.mesh/` in the checkout) holds everything of one mesh: the
plan, certificates, Envoy configurations, databases, logs and `state.json`, which the
supervisor keeps current. Every command but `up` reads that state; none of them finds
processes by name, only by the pids recorded there.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from mesh.control import deadletters, natsconf
from mesh.control.local import ControlError, load_topology, running_state, status_table
from mesh.control.pki import MeshPKI, format_table
from mesh.control.tracestore import TraceStore, render_waterfall
from mesh.runtime import telemetry
from mesh.runtime.events import NatsSettings


def status(run_dir: Path, as_json: bool) -> int:
    state = running_state(run_dir)
    if state is None:
        print(json.dumps({"status": "down"}) if as_json else f"no mesh is running from {run_dir}")
        return 3
    print(json.dumps(state, indent=2) if as_json else status_table(state))
    return 0


def logs(
    run_dir: Path, service: str, lines: int, trace_id: str | None = None, raw: bool = False
) -> int:
    """`meshctl logs SERVICE [--trace ID] [--json]`: every instance's last lines.

    With `--trace`, only the lines logged within that trace (the services log JSON lines
    with `trace_id`), from the whole log; `--json` prints the lines as they are stored.
    """
    paths = sorted((run_dir / "logs").glob(f"{service}-*.log"))
    paths = [p for p in paths if not p.name.endswith(".envoy.log")]
    if not paths:
        raise ControlError(f"no logs of {service!r} in {run_dir / 'logs'}")
    for path in paths:
        instance = path.name.removesuffix(".log")
        found = path.read_text(errors="replace").splitlines()
        if trace_id is not None:
            found = [
                line
                for line in found
                if (fields := telemetry.parse_log_line(line)) and fields.get("trace_id") == trace_id
            ]
        for line in found[-lines:] if trace_id is None else found:
            print(f"{instance:<16}| {line if raw else telemetry.readable(line)}")
    return 0


def _trace_store(run_dir: Path) -> TraceStore:
    path = run_dir / "traces" / "traces.db"
    if not path.exists():
        raise ControlError(f"no traces in {path}: `meshctl up` runs the trace store")
    return TraceStore(path)


def show_trace(run_dir: Path, key: str) -> int:
    """`meshctl trace ORDER_ID|TRACE_ID`: the trace as a waterfall.

    An order id finds the trace its placement started (every saga step joins it); a
    32-hex-digit trace id is taken as is.
    """
    store = _trace_store(run_dir)
    try:
        trace_ids = store.traces_with(telemetry.ORDER_ID, key) or [key.lower()]
        spans = store.trace(trace_ids[-1])  # the oldest: where the order was placed
    finally:
        store.close()
    if not spans:
        raise ControlError(f"no trace of {key!r} (an order id or a trace id)")
    print(render_waterfall(spans))
    return 0


def slow_traces(run_dir: Path, limit: int) -> int:
    """`meshctl traces --slow`: the slowest traces kept, slowest first."""
    store = _trace_store(run_dir)
    try:
        summaries = store.slowest(limit)
    finally:
        store.close()
    print(f"{'TRACE':<34}{'MS':>9}  {'SPANS':>5}  {'ERRORS':>6}  ROOT")
    for summary in summaries:
        print(
            f"{summary.trace_id:<34}{summary.duration_ms:>9.1f}  {summary.spans:>5}  "
            f"{summary.errors:>6}  {summary.root_service} {summary.root_name}"
        )
    return 0


def certs(root: Path, run_dir: Path, config: Path | None, rotate: bool, issue: bool) -> int:
    """`meshctl certs [--issue] [--rotate]`: the table, after issuing or rotating."""
    from mesh.deploy.commands import issue_certificates

    topology = load_topology(root, config)
    pki = MeshPKI(run_dir / "pki", topology.trust_domain, topology.namespace)
    infos = issue_certificates(topology, pki) if issue else pki.inspect()
    if not infos:
        raise ControlError(f"no certificates in {run_dir / 'pki'}: `meshctl up` creates them")
    if rotate:
        for info in infos:
            if info.identity != "ca":
                pki.issue(info.identity, info.instance)
        infos = pki.inspect()
    print(format_table(infos, datetime.now(UTC)))
    return 0


async def _with_jetstream(
    settings: NatsSettings, work: Callable[[JetStreamContext], Awaitable[int]]
) -> int:
    client = await settings.connect(max_reconnect_attempts=1, connect_timeout=5)
    try:
        return await work(client.jetstream())
    finally:
        await client.close()


def _letter_row(letter: deadletters.DeadLetter) -> str:
    """One dead letter in `meshctl dlq list`: who wrote it, the event's subject, why."""
    writer = f"{letter.producer} (outbox)" if letter.producer else letter.consumer
    return f"{letter.sequence:>6}  {writer:<24} {letter.subject:<36} {letter.reason}"


async def _replay_all(js: JetStreamContext) -> int:
    """Replay every dead letter that holds up; say why each other one is left."""
    refused = 0
    for letter in await deadletters.dead_letters(js):
        try:
            await deadletters.replay(js, letter.sequence)
        except deadletters.ReplayRefused as error:
            refused += 1
            print(f"left {letter.sequence}: {error}", file=sys.stderr)
            continue
        print(f"replayed {letter.sequence} to {letter.subject} (was dead for {letter.consumer})")
    return 1 if refused else 0


def dlq(run_dir: Path, action: str, sequence: int | None, as_json: bool) -> int:
    """`meshctl dlq list | show SEQ | replay SEQ | replay --all`."""
    state = running_state(run_dir)
    if state is None:
        raise ControlError(f"no mesh is running from {run_dir}")

    async def work(js: JetStreamContext) -> int:
        if action == "list":
            letters = await deadletters.dead_letters(js)
            if as_json:
                print(json.dumps([letter.describe() for letter in letters], indent=2))
            else:
                print(f"{len(letters)} dead letters")
                for letter in letters:
                    print(f"  {_letter_row(letter)}")
            return 0
        if action == "show":
            assert sequence is not None
            print(json.dumps((await deadletters.dead_letter(js, sequence)).describe(), indent=2))
            return 0
        if sequence is not None:
            letter = await deadletters.replay(js, sequence)
            print(f"replayed {sequence} to {letter.subject} (was dead for {letter.consumer})")
            return 0
        return await _replay_all(js)

    try:
        return asyncio.run(_with_jetstream(natsconf.admin_from_state(state), work))
    except (NotFoundError, ValueError) as error:
        raise ControlError(f"dlq {action}: {error}") from None
