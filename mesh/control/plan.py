"""The layout of a mesh: which instances run, where each listens and where peers reach it.

`make_plan` turns the topology into concrete instances (`catalog-0`, `orders-1`, ...) and
ports, picking free ones unless `mesh.yaml` fixes them, so two meshes can run side by
side on loopback. The plan is written to the run directory, where `meshctl status`,
`down` and the tests find it.

In containers (`mesh.deploy`) every instance has a network namespace of its own, so the
ports are the same fixed ones everywhere (`CONTAINER_PORTS`) and peers are reached by
name: `orders-0` under Docker Compose, the Service `orders.<namespace>.svc.cluster.local`
on Kubernetes.

No Envoy of the mesh has an admin port: each one's admin interface (which can stop it,
`/quitquitquit`, or fail its health checks, `/healthcheck/fail`) is a unix socket, mode
0600, that only the mesh's owner can connect to; locally in the run directory's `envoy/`
(`admin_socket`), in containers in the Envoy container's own `/tmp`.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mesh.control.routing import routing_root
from mesh.control.topology import HTTP_OFF, HTTP_ON, Topology

PLAN_FILE = "plan.json"
#: Where a checkout's mesh keeps its state, certificates, logs and databases (git-ignored).
DEFAULT_RUN_DIR = Path(".mesh")
#: Where the run directory keeps each Envoy's admin socket (`admin_socket`).
ADMIN_SOCKET_DIR = "envoy"
#: Where the run directory keeps the endpoints of autoscaled services (`endpoints_dir`).
ENDPOINTS_DIR = "endpoints"
#: The longest path a unix socket may have on Linux (`sun_path` is 108 bytes, NUL included).
MAX_SOCKET_PATH_BYTES = 107


class PlanError(ValueError):
    """The mesh cannot be laid out in this run directory; the message says why."""


def admin_socket(run_dir: Path, envoy_name: str) -> str:
    """The unix socket of the admin interface of the Envoy `envoy_name` (an instance's
    sidecar, `orders-0`, or `edge`): `RUN_DIR/envoy/<name>.sock`, for a sidecar beside
    the directory of its configuration (`RUN_DIR/envoy/<name>/`). As short as that, since
    a socket's path may not be longer than `MAX_SOCKET_PATH_BYTES` (PlanError if it
    would be)."""
    path = run_dir.absolute() / ADMIN_SOCKET_DIR / f"{envoy_name}.sock"
    length = len(os.fsencode(path))
    if length > MAX_SOCKET_PATH_BYTES:
        raise PlanError(
            f"the admin socket {path} would be {length} bytes long, and a unix socket's "
            f"path may be at most {MAX_SOCKET_PATH_BYTES}: use a run directory with a "
            f"path {length - MAX_SOCKET_PATH_BYTES} bytes shorter (--run-dir)"
        )
    return str(path)


@dataclass(frozen=True)
class InstancePlan:
    """One replica of a service: its app and its sidecar."""

    service: str
    index: int
    app_port: int
    inbound_port: int
    admin_socket: str
    """The path of the unix socket of the sidecar's admin interface (it has no port)."""
    outbound: Mapping[str, int] = field(default_factory=dict)
    """Dependency name -> the port of this instance's sidecar that leads to it."""
    metrics_port: int = 0
    """Where the app serves its Prometheus metrics (`mesh.runtime.metrics`)."""
    host: str = "127.0.0.1"
    """The name or address peers reach this instance's inbound listener on."""
    probe_port: int = 0
    """In containers: the sidecar's plaintext port for the orchestrator's probes (0: none)."""
    version: str = ""
    """The release of its service it runs (`Service.releases`); "" when it has one."""

    @property
    def name(self) -> str:
        """`catalog-0`, or for a service with versions `catalog-v2-0`."""
        return "-".join(part for part in (self.service, self.version, str(self.index)) if part)

    def listeners(self) -> list[tuple[int, str]]:
        """Each TCP port its app and sidecar listen on, with what listens there."""
        outbound = [
            (port, f"{self.name}'s sidecar outbound to {to}") for to, port in self.outbound.items()
        ]
        ports = [
            (self.app_port, f"{self.name}'s app"),
            (self.metrics_port, f"{self.name}'s app metrics"),
            (self.inbound_port, f"{self.name}'s sidecar inbound"),
            (self.probe_port, f"{self.name}'s sidecar probes"),
            *outbound,
        ]
        return [(port, what) for port, what in ports if port]


@dataclass(frozen=True)
class EdgePlan:
    """The edge Envoy's ports and admin socket, and its companion's port (reflection and
    health)."""

    port: int
    """Plain HTTP (`edge.http`): REST and gRPC, or redirects to HTTPS; 0 when it is off."""
    admin_socket: str
    companion_port: int
    probe_port: int = 0
    https_port: int = 0
    """HTTPS (`edge.https`); 0: none."""
    internal_port: int = 0
    """Where, on loopback, the edge serves its own calls (identity's JWKS, the health checks
    its companion relays) when `port` does not serve clients (`edge.http` off or
    redirect); 0: `port` does."""

    deny_list_port: int = 0
    """Where, on loopback only, the edge companion asks identity for the API keys it
    revoked, through the edge as the edge (`mesh.control.deny_list`); 0: no API keys."""
    deny_list_dir: str = ""
    """The directory of the deny list's file, which the companion writes and the edge
    reads (`mesh.control.deny_list`); empty: no API keys."""

    @property
    def deny_list(self) -> Path | None:
        """`deny_list_dir`, if any."""
        return Path(self.deny_list_dir) if self.deny_list_dir else None

    @property
    def own_port(self) -> int:
        """The loopback port the edge and its companion call the edge on."""
        return self.internal_port or self.port


@dataclass(frozen=True)
class MeshPlan:
    """Every instance of the mesh, plus NATS and the edge (when something is exposed)."""

    run_dir: Path
    instances: tuple[InstancePlan, ...]
    nats_port: int
    #: NATS's HTTP monitor, which takes no credentials: only in containers, for the
    #: orchestrator's probes; None in the local mesh.
    nats_monitor_port: int | None
    #: The trace store's OTLP/gRPC port (`mesh.control.tracestore`), where every span goes.
    trace_port: int = 0
    edge: EdgePlan | None = None
    #: The web console's loopback port (`mesh.control.console`); 0: none (containers).
    console_port: int = 0
    #: Where the listeners other hosts reach (each inbound, the edge) bind.
    listen_host: str = "127.0.0.1"
    #: The link through which every Envoy reads the split between a service's versions
    #: (`mesh.control.routing`).
    routing_root: str = ""
    #: Where the local mesh keeps the endpoints of each service that autoscales
    #: (`mesh.control.envoy.endpoints`); empty in containers, whose orchestrator scales.
    endpoints_dir: str = ""

    def running_at_start(self, topology: Topology) -> tuple[InstancePlan, ...]:
        """The instances that start with the mesh: all but the replicas an autoscaled
        service may add later (those above its `min`)."""
        return tuple(
            i
            for i in self.instances
            if (scale := topology.services[i.service].autoscale) is None or i.index < scale.min
        )

    def of(self, service: str) -> list[InstancePlan]:
        return [i for i in self.instances if i.service == service]

    def listeners(self) -> list[tuple[int, str]]:
        """Each TCP port of the mesh, with what listens there (locally all on one host; in
        containers each instance's in its own network namespace)."""
        ports = [
            (self.nats_port, "NATS"),
            (self.nats_monitor_port or 0, "NATS's monitor"),
            (self.trace_port, "the trace store"),
            (self.console_port, "the console"),
        ]
        if self.edge is not None:
            ports += [
                (self.edge.port, "the edge"),
                (self.edge.https_port, "the edge's HTTPS"),
                (self.edge.internal_port, "the edge's own calls"),
                (self.edge.companion_port, "the edge companion"),
                (self.edge.deny_list_port, "the edge companion's calls for the deny list"),
                (self.edge.probe_port, "the edge's probes"),
            ]
        own = [(port, what) for port, what in ports if port]
        return own + [listener for i in self.instances for listener in i.listeners()]

    def endpoints_of(self, service: str, version: str = "") -> list[tuple[str, int]]:
        """Where a caller's sidecar reaches `service` (its release `version`): each (host,
        inbound port) once."""
        return list(
            dict.fromkeys(
                (i.host, i.inbound_port) for i in self.of(service) if i.version == version
            )
        )

    def instance(self, name: str) -> InstancePlan:
        for candidate in self.instances:
            if candidate.name == name:
                return candidate
        raise KeyError(name)

    def to_json(self) -> str:
        data = asdict(self)
        data["run_dir"] = str(self.run_dir)
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str) -> MeshPlan:
        data: dict[str, Any] = json.loads(text)
        return cls(
            run_dir=Path(data["run_dir"]),
            instances=tuple(InstancePlan(**i) for i in data["instances"]),
            nats_port=data["nats_port"],
            nats_monitor_port=data.get("nats_monitor_port"),
            trace_port=data.get("trace_port", 0),
            edge=EdgePlan(**data["edge"]) if data.get("edge") else None,
            console_port=data.get("console_port", 0),
            listen_host=data.get("listen_host", "127.0.0.1"),
            routing_root=data.get("routing_root", ""),
        )

    def save(self) -> Path:
        path = self.run_dir / PLAN_FILE
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, run_dir: Path) -> MeshPlan:
        return cls.from_json((run_dir / PLAN_FILE).read_text())


def free_port() -> int:
    """A loopback port that was free a moment ago (servers refuse a taken one loudly)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Ports:
    """Hands out ports: a fixed one when given, else a free one never handed out before."""

    def __init__(self, pick: Callable[[], int]) -> None:
        self._pick = pick
        self._given: set[int] = set()

    def take(self, fixed: int | None = None) -> int:
        if fixed:
            self._given.add(fixed)
            return fixed
        while (port := self._pick()) in self._given:
            pass
        self._given.add(port)
        return port


def _edge_plan(
    topology: Topology,
    run_dir: Path,
    ports: _Ports,
    edge_port: int | None,
    https_port: int | None,
) -> EdgePlan:
    """The edge's ports: plain HTTP unless off, HTTPS if any, and a loopback port for its
    own calls when plain HTTP does not serve clients."""
    settings = topology.edge
    plain = settings.port if edge_port is None else edge_port
    port = 0 if settings.http == HTTP_OFF else ports.take(plain or None)
    companion_port = ports.take()
    https = 0
    if settings.https is not None:
        https = ports.take((settings.https.port if https_port is None else https_port) or None)
    return EdgePlan(
        port=port,
        admin_socket=admin_socket(run_dir, "edge"),
        companion_port=companion_port,
        https_port=https,
        internal_port=0 if settings.http == HTTP_ON else ports.take(),
        deny_list_port=ports.take() if settings.api_keys.plans else 0,
        deny_list_dir=str(run_dir / "edge" / "keys") if settings.api_keys.plans else "",
    )


def make_plan(
    topology: Topology,
    run_dir: Path,
    pick: Callable[[], int] = free_port,
    *,
    edge_port: int | None = None,
    https_port: int | None = None,
) -> MeshPlan:
    """The instances and ports of `topology`, in start order.

    `edge_port` and `https_port` override `edge.port` and `edge.https.port` of the
    topology (0 picks a free port).
    """
    ports = _Ports(pick)
    instances = []
    for name in topology.start_order():
        service = topology.services[name]
        for version in service.releases:
            # Every replica an autoscaled service may run has its place (and ports) from
            # the start; those above its `min` start when its load asks for them.
            count = service.autoscale.max if service.autoscale else version.replicas
            for index in range(count):
                fixed = service.ports.for_replica(index)
                instance = InstancePlan(
                    service=name,
                    index=index,
                    app_port=ports.take(fixed.app),
                    inbound_port=ports.take(fixed.inbound),
                    admin_socket="",
                    outbound={dependency: ports.take() for dependency in sorted(service.calls)},
                    metrics_port=ports.take(),
                    version=version.name,
                )
                socket = admin_socket(run_dir, instance.name)
                instances.append(replace(instance, admin_socket=socket))
    edge = None
    if topology.edge.expose:
        edge = _edge_plan(topology, run_dir, ports, edge_port, https_port)
    return MeshPlan(
        run_dir=run_dir,
        instances=tuple(instances),
        nats_port=ports.take(topology.nats.port),
        nats_monitor_port=None,
        trace_port=ports.take(),
        edge=edge,
        console_port=ports.take(),
        routing_root=str(routing_root(run_dir)),
        endpoints_dir=str(run_dir.absolute() / ENDPOINTS_DIR),
    )
