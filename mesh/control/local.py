"""A local mesh: its run directory, and the supervisor that runs it.

The run directory (default `.mesh/` in the checkout) holds everything of one mesh: the
plan, certificates, Envoy configurations, databases, logs and `state.json`, which the
supervisor keeps current. Every command but `up` reads that state; none of them finds
processes by name, only by the pids recorded there.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mesh.control import conformance, contracts, preflight
from mesh.control.process import make_private, pid_alive
from mesh.control.state import STATE_FILE, all_pids, read_state
from mesh.control.topology import HTTP_REDIRECT, Topology, TopologyError, load

if TYPE_CHECKING:
    from mesh.control.supervisor import Supervisor

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


def checked_topology(
    root: Path,
    run_dir: Path,
    config: Path | None,
    edge_port: int | None,
    https_port: int | None = None,
) -> Topology:
    """The topology, once the preflight found nothing in the way of starting it;
    ControlError with every problem, one a line, if it did."""
    topology = load_topology(root, config)
    found = preflight.problems(
        topology, root / contracts.DESCRIPTOR_SET, run_dir.resolve(), edge_port, https_port
    )
    if found:
        raise ControlError(conformance.told_together(found, "nothing started"))
    return topology


def _supervisor(
    root: Path,
    topology: Topology,
    run_dir: Path,
    stream: bool,
    edge_ports: tuple[int | None, int | None],
) -> Supervisor:
    # Imported only by the commands that run a mesh: the supervisor brings the runtime's
    # event bus and database layers, 0.45 s of CPU that `up --detach`, `status` and the
    # rest would spend before doing anything.
    from mesh.control.supervisor import Supervisor, SupervisorError

    try:
        return Supervisor(
            root,
            topology,
            run_dir.resolve(),
            root / contracts.DESCRIPTOR_SET,
            on_line=(lambda line: print(line, flush=True)) if stream else None,
            edge_port=edge_ports[0],
            https_port=edge_ports[1],
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
    https_port: int | None = None,
) -> int:
    """Run a mesh until SIGINT/SIGTERM (`up` in the foreground, or `supervise`)."""
    if running_state(run_dir) is not None:
        raise ControlError(f"a mesh is already running from {run_dir}; `meshctl down` first")
    topology = checked_topology(root, run_dir, config, edge_port, https_port)
    ports = (edge_port, https_port)
    supervisor = _supervisor(root, topology, run_dir, stream=foreground, edge_ports=ports)
    from mesh.control.supervisor import SupervisorError  # loaded by `_supervisor`

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


def _supervisor_failure(log_path: Path, log_start: int, code: int) -> str:
    """What a detached supervisor said when it failed (`meshctl: ...` to the end of its
    log, which quotes the process that failed), else where to look."""
    with log_path.open("rb") as log:
        log.seek(log_start)
        said = log.read().decode(errors="replace")
    start = said.rfind("meshctl: ")
    if start < 0:
        return f"the supervisor exited with {code}; see {log_path}"
    return said[start + len("meshctl: ") :].strip() + f"\n  the supervisor's log: {log_path}"


def up_detached(
    root: Path,
    run_dir: Path,
    config: Path | None,
    edge_port: int | None = None,
    https_port: int | None = None,
) -> int:
    """Start a supervisor in the background; return once the mesh is healthy."""
    if running_state(run_dir) is not None:
        raise ControlError(f"a mesh is already running from {run_dir}; `meshctl down` first")
    # Fail here, in the user's terminal, on whatever the supervisor would fail on first.
    checked_topology(root, run_dir, config, edge_port, https_port)
    make_private(run_dir)  # supervisor.log too is its owner's only
    (run_dir / STATE_FILE).unlink(missing_ok=True)
    log_path = run_dir / "supervisor.log"
    argv = [sys.executable, "-m", "mesh.cli", "supervise", "--run-dir", str(run_dir.resolve())]
    if config is not None:
        argv += ["--config", str(config.resolve())]
    if edge_port is not None:
        argv += ["--edge-port", str(edge_port)]
    if https_port is not None:
        argv += ["--https-port", str(https_port)]
    with log_path.open("ab") as log:
        log_start = log.seek(0, os.SEEK_END)
        process = subprocess.Popen(
            argv, cwd=root, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + DETACH_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise ControlError(_supervisor_failure(log_path, log_start, code))
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
    """Stop the supervisor (which stops the mesh); kill by pid whatever outlives it.

    With nothing running it says so, and exits 0 as an init script's `stop` does: the
    mesh is down, as asked, so a script may call `down` without asking `status` first.
    """
    try:
        state = read_state(run_dir)
    except FileNotFoundError:
        print(f"no mesh is running from {run_dir}")
        return 0
    recorded: int | None = state.get("supervisor_pid")
    supervisor = recorded if pid_alive(recorded) else None
    if supervisor is not None:
        _stop_supervisor(supervisor)
    leftovers = _kill_leftovers(run_dir)
    if supervisor is None and not leftovers:
        print(f"no mesh is running from {run_dir}")
        return 0
    print(
        f"stopped the mesh of {run_dir}"
        + (f" (killed {len(leftovers)} leftover processes)" if leftovers else "")
    )
    return 0


def _stop_supervisor(pid: int) -> None:
    """SIGTERM the supervisor, and wait while it stops the mesh."""
    with contextlib.suppress(ProcessLookupError):  # it may have exited since
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + DETACH_TIMEOUT_SECONDS
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)


def _kill_leftovers(run_dir: Path) -> list[int]:
    """SIGKILL each process of the state, as the supervisor last wrote it, still alive."""
    leftovers = [pid for pid in all_pids(read_state(run_dir)) if pid_alive(pid)]
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return leftovers


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


def _memory_line(memory: dict[str, int]) -> str:
    """The mesh's memory as PSS, in MiB: shared pages count once (`state.memory_pss_kib`)."""
    parts = ", ".join(f"{name} {kib / 1024:.0f}" for name, kib in memory.items() if name != "total")
    return f"memory: {memory['total'] / 1024:.0f} MiB PSS, shared pages counted once ({parts})"


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
    lines = _aligned(rows)
    lines += [
        f"degraded: {i['instance']}: {reason}"
        for i in state["instances"]
        for reason in i.get("degraded", [])
    ]
    lines += [
        f"events waiting: {i['instance']}: "
        + ", ".join(f"{name} {count:g}" for name, count in sorted(i["events_waiting"].items()))
        for i in state["instances"]
        if i.get("events_waiting")
    ]
    lines += alert_lines(state.get("alerts", []))
    lines += autoscale_lines(state.get("autoscale", {}))
    lines += _where(state)
    if "memory_pss_kib" in state:
        lines.append(_memory_line(state["memory_pss_kib"]))
    if state.get("ready_seconds") is not None:
        lines.append(f"healthy {state['ready_seconds']:.1f}s after start; status {state['status']}")
    return "\n".join(lines)


def _subject(alert: dict[str, Any]) -> str:
    """What an alert is about: its labels but its name, severity and windows."""
    shown = {k: v for k, v in alert["labels"].items() if k not in _NOT_SUBJECT}
    return ",".join(f"{k}={v}" for k, v in shown.items())


_NOT_SUBJECT = {"alertname", "severity", "long_window", "short_window"}


def alert_lines(alerts: list[dict[str, Any]]) -> list[str]:
    """`meshctl status`'s lines of the alerts: one each, firing first."""
    return [
        f"alert {a['state']}: {a['labels']['alertname']} {_subject(a)} "
        f"({a['labels'].get('severity', '-')}): {a['annotations'].get('summary', '')}"
        for a in alerts
    ]


def autoscale_lines(autoscaled: dict[str, dict[str, Any]]) -> list[str]:
    """`meshctl status`'s line per autoscaled service: its replicas and what they follow."""
    lines = []
    for name, scale in sorted(autoscaled.items()):
        value = "-" if scale["value"] is None else f"{scale['value']:g}"
        moving = [f"adding {scale['joining']}"] if scale["joining"] else []
        moving += [f"draining {scale['draining']}"] if scale["draining"] else []
        lines.append(
            f"autoscale: {name} {scale['replicas']} replicas (min {scale['min']}, max "
            f"{scale['max']}; {scale['metric']} {value}, target {scale['target']:g} per "
            f"replica){'; ' + ', '.join(moving) if moving else ''}"
        )
    return lines


def alerts_table(alerts: list[dict[str, Any]]) -> str:
    """`meshctl alerts`: the alerts firing and pending, firing first."""
    if not alerts:
        return "no alert is firing or pending"
    rows = [("STATE", "ALERT", "SUBJECT", "SEVERITY", "SINCE", "SUMMARY")]
    for a in alerts:
        labels = a["labels"]
        rows.append(
            (
                a["state"], labels["alertname"], _subject(a), labels.get("severity", "-"),
                a["active_at"], a["annotations"].get("summary", ""),
            )
        )  # fmt: skip
    return "\n".join(line.rstrip() for line in _aligned(rows))


def _aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    """`rows` as lines, each column as wide as its widest cell."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]


def _https_line(url: str, ca: str | None) -> str:
    """Where the edge speaks HTTPS, and how a client verifies it (the CA's path relative
    to here when it is below)."""
    if ca is None:
        return f"edge https: {url} (REST and gRPC over TLS, with your certificate)"
    path = Path(ca)
    if path.is_relative_to(Path.cwd()):
        path = path.relative_to(Path.cwd())
    return (
        f"edge https: {url} (REST and gRPC over TLS; the mesh CA vouches for it: "
        f"`curl --cacert {path} {url}/v1/products`)"
    )


def _where(state: dict[str, Any]) -> list[str]:
    """Where to reach the mesh's parts, and what the table's figures are."""
    lines: list[str] = []
    nats = state["nats"]
    lines.append(f"nats: {nats['url']} (TLS with the mesh's certificates; pid {nats['pid']})")
    edge = state.get("edge")
    if edge:
        lines.append(
            f"edge: {edge['url']} (REST and gRPC; {edge['url']}/docs, {edge['url']}/openapi.json;"
            f" pid {edge['pid']})"
        )
    if edge and edge.get("https_url"):
        lines.append(_https_line(edge["https_url"], edge.get("ca")))
    if edge and edge.get("http") == HTTP_REDIRECT:
        lines.append(
            f"edge http: {edge['http_url']} redirects to HTTPS (308; gRPC is refused there,"
            " naming the HTTPS port)"
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
    console = state.get("console") or {}
    if console.get("url"):
        lines.append(
            f"console: {console['url']} (service map, traces; pid {console['pid']};"
            " the token is this mesh's, keep it to yourself)"
        )
    return lines
