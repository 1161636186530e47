"""`meshctl up / down / status / logs / certs`: controlling a local mesh.

The run directory (default `.mesh/` in the checkout) holds everything of one mesh: the
plan, certificates, Envoy configurations, databases, logs and `state.json`, which the
supervisor keeps current. Every command but `up` reads that state; none of them finds
processes by name, only by the pids recorded there.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from mesh import contracts, deadletters, natsconf
from mesh.pki import MeshPKI, format_table
from mesh.plan import PlanError, make_plan
from mesh.runtime import telemetry
from mesh.runtime.events import NatsSettings
from mesh.supervisor import (
    STATE_FILE,
    Supervisor,
    SupervisorError,
    all_pids,
    make_private,
    pid_alive,
    read_state,
)
from mesh.topology import Topology, TopologyError, load
from mesh.tracestore import TraceStore, render_waterfall

TOPOLOGY_FILE = "mesh.yaml"
#: How long `up --detach` and `down` wait for the supervisor.
DETACH_TIMEOUT_SECONDS = 180.0


class ControlError(RuntimeError):
    """A command cannot do what was asked; the message says why."""


def load_topology(root: Path, config: Path | None) -> Topology:
    try:
        return load(config or root / TOPOLOGY_FILE)
    except TopologyError as error:
        raise ControlError(str(error)) from None


def _supervisor(
    root: Path, run_dir: Path, config: Path | None, stream: bool, edge_port: int | None
) -> Supervisor:
    descriptor_set = root / contracts.DESCRIPTOR_SET
    if not descriptor_set.is_file():
        raise ControlError(f"{descriptor_set} is missing: run `make gen` first")
    try:
        return Supervisor(
            root,
            load_topology(root, config),
            run_dir.resolve(),
            descriptor_set,
            on_line=(lambda line: print(line, flush=True)) if stream else None,
            edge_port=edge_port,
        )
    except SupervisorError as error:
        raise ControlError(str(error)) from None


def running_state(run_dir: Path) -> dict[str, Any] | None:
    try:
        state = read_state(run_dir)
    except FileNotFoundError:
        return None
    return state if pid_alive(state.get("supervisor_pid")) else None


def supervise(
    root: Path,
    run_dir: Path,
    config: Path | None,
    *,
    foreground: bool,
    edge_port: int | None = None,
) -> int:
    """Run a mesh until SIGINT/SIGTERM (`up` in the foreground, or `supervise`)."""
    if running_state(run_dir) is not None:
        raise ControlError(f"a mesh is already running from {run_dir}; `meshctl down` first")
    supervisor = _supervisor(root, run_dir, config, stream=foreground, edge_port=edge_port)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        supervisor.prepare()
        supervisor.start()
        if foreground:
            print(status_table(supervisor.state()), flush=True)
            print("ready; Ctrl-C stops the mesh", flush=True)
        supervisor.run(stop)
        return 0
    except SupervisorError as error:
        supervisor.status = "failed"
        print(f"meshctl: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        supervisor.stop()
        if foreground:
            print("meshctl: stopped the mesh", flush=True)


def up_detached(
    root: Path, run_dir: Path, config: Path | None, edge_port: int | None = None
) -> int:
    """Start a supervisor in the background; return once the mesh is healthy."""
    if running_state(run_dir) is not None:
        raise ControlError(f"a mesh is already running from {run_dir}; `meshctl down` first")
    # Fail here, in the user's terminal, on a bad mesh.yaml or a run directory too deep
    # for the Envoys' admin sockets (the plan the supervisor will make lays them out).
    try:
        make_plan(load_topology(root, config), run_dir.resolve())
    except PlanError as error:
        raise ControlError(str(error)) from None
    make_private(run_dir)  # supervisor.log too is its owner's only
    (run_dir / STATE_FILE).unlink(missing_ok=True)
    log_path = run_dir / "supervisor.log"
    argv = [sys.executable, "-m", "mesh.cli", "supervise", "--run-dir", str(run_dir.resolve())]
    if config is not None:
        argv += ["--config", str(config.resolve())]
    if edge_port is not None:
        argv += ["--edge-port", str(edge_port)]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv, cwd=root, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + DETACH_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise ControlError(f"the supervisor exited with {code}; see {log_path}")
        try:
            state = read_state(run_dir)
        except (FileNotFoundError, json.JSONDecodeError):
            state = {}
        if state.get("status") == "healthy":
            print(status_table(state))
            print(f"supervisor pid {process.pid}; `meshctl down` stops the mesh")
            return 0
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    raise ControlError(
        f"the mesh was not healthy within {DETACH_TIMEOUT_SECONDS:.0f}s; see {log_path}"
    )


def down(run_dir: Path) -> int:
    """Stop the supervisor (which stops the mesh); kill by pid whatever outlives it."""
    try:
        state = read_state(run_dir)
    except FileNotFoundError:
        print(f"no mesh has run from {run_dir}")
        return 0
    supervisor: int | None = state.get("supervisor_pid")
    if supervisor is not None and pid_alive(supervisor):
        os.kill(supervisor, signal.SIGTERM)
    deadline = time.monotonic() + DETACH_TIMEOUT_SECONDS
    while pid_alive(supervisor) and time.monotonic() < deadline:
        time.sleep(0.2)
    leftovers = [pid for pid in all_pids(read_state(run_dir)) if pid_alive(pid)]
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    print(
        f"stopped the mesh of {run_dir}"
        + (f" (killed {len(leftovers)} leftover processes)" if leftovers else "")
    )
    return 0


def status(run_dir: Path, as_json: bool) -> int:
    state = running_state(run_dir)
    if state is None:
        print(json.dumps({"status": "down"}) if as_json else f"no mesh is running from {run_dir}")
        return 3
    print(json.dumps(state, indent=2) if as_json else status_table(state))
    return 0


def _rates_cells(rates: dict[str, Any]) -> tuple[str, str, str]:
    """Requests/s, error % and p99 over the supervisor's last interval (2 s)."""
    if not rates:
        return "-", "-", "-"
    p99 = rates.get("p99_ms")
    return (
        f"{rates['requests_per_second']:.1f}",
        f"{100 * rates['error_ratio']:.1f}",
        "-" if p99 is None else f"{p99:.1f}",
    )


def _health_cell(instance: dict[str, Any]) -> str:
    health: str = instance["health"]
    return f"{health}, DEGRADED" if instance.get("degraded") else health


def status_table(state: dict[str, Any]) -> str:
    rows = [
        ("SERVICE", "INSTANCE", "APP PID", "SIDECAR PID", "APP", "INBOUND", "HEALTH", "RESTARTS",
         "REQ/S", "ERR%", "P99 MS")
    ]  # fmt: skip
    for i in state["instances"]:
        rows.append(
            (
                i["service"], i["instance"], str(i["app_pid"]), str(i["sidecar_pid"]),
                f"127.0.0.1:{i['app_port']}", f"127.0.0.1:{i['inbound_port']}",
                _health_cell(i), str(i["restarts"]), *_rates_cells(i.get("rates", {})),
            )
        )  # fmt: skip
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines += [
        f"degraded: {i['instance']}: {reason}"
        for i in state["instances"]
        for reason in i.get("degraded", [])
    ]
    nats = state["nats"]
    lines.append(f"nats: {nats['url']} (TLS with the mesh's certificates; pid {nats['pid']})")
    edge = state.get("edge")
    if edge:
        lines.append(
            f"edge: {edge['url']} (REST and gRPC; {edge['url']}/docs, {edge['url']}/openapi.json;"
            f" pid {edge['pid']})"
        )
    lines.append(
        "REQ/S, ERR%, P99: the last 2 s, from each app's Prometheus metrics "
        "(`curl 127.0.0.1:METRICS_PORT/metrics`; Envoy's: "
        "`curl --unix-socket ADMIN_SOCKET http://envoy/stats/prometheus`)"
    )
    sockets = [i["admin_socket"] for i in state["instances"] if i.get("admin_socket")]
    if sockets:
        where = Path(sockets[0]).parent
        lines.append(
            f"envoy admin: unix sockets {where}/INSTANCE.sock"
            + (f" and {edge['admin_socket']}" if edge and edge.get("admin_socket") else "")
            + ", owner only (no admin port)"
        )
    traces = state.get("traces", {})
    if traces:
        lines.append(
            f"traces: {traces['endpoint']} (OTLP/gRPC, pid {traces['pid']}; `meshctl trace`)"
        )
    apps = sum(i.get("app_rss_kib", 0) for i in state["instances"])
    sidecars = sum(i.get("sidecar_rss_kib", 0) for i in state["instances"])
    parts = {"edge": (edge or {}).get("rss_kib", 0), "nats": nats.get("rss_kib", 0),
             "traces": traces.get("rss_kib", 0)}  # fmt: skip
    total = apps + sidecars + sum(parts.values())
    lines.append(
        f"memory: {total / 1024:.0f} MiB resident (apps {apps / 1024:.0f}, "
        f"sidecars {sidecars / 1024:.0f}, "
        + ", ".join(f"{name} {kib / 1024:.0f}" for name, kib in parts.items())
        + ")"
    )
    if state.get("ready_seconds") is not None:
        lines.append(f"healthy {state['ready_seconds']:.1f}s after start; status {state['status']}")
    return "\n".join(lines)


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
    from mesh.deploy import issue_certificates

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
