"""`docker-compose.yml`, rendered from mesh.yaml (`meshctl render compose`).

The same mesh as `meshctl up`, in containers (see `mesh.deploy.containers` for the ports):

1. `certs` (one-shot, the shop image): `meshctl certs --issue` makes the mesh CA and a
   SPIFFE certificate per instance, the edge, NATS and meshctl on the `pki` volume.
   `edge-files` (one-shot) writes the descriptor set, OpenAPI document and docs page the
   edge serves.
2. `nats` (official image): JetStream on the `nats-data` volume, TLS with client
   certificates, the users and permissions of `mesh.control.natsconf`. `events-init`
   (one-shot) creates the streams and each service's durable consumer.
3. `jaeger`: takes every span over OTLP/gRPC; its UI is published on loopback.
4. Per instance, in the order services call each other: `<instance>` is its Envoy
   sidecar (official image), which owns the instance's network namespace and so its
   name on the network; `<instance>-app` is the app, in that namespace
   (`network_mode: service:<instance>`), reaching its dependencies through the
   sidecar's outbound listeners on loopback.
5. `edge` (Envoy) and `edge-companion` (reflection, health), the only ports published:
   plain HTTP (unless `edge.http: off`) and HTTPS (with `edge.https`). Its HTTPS
   certificate is the mesh CA's (`certs` issues and renews it on the `pki` volume), or
   the user's own (`edge.https.cert_file`), whose directory is mounted read-only into
   `edge-files`, which copies it into the volume `edge-tls` before the edge starts, and
   into the companion, which copies it again whenever it changes.

A service with versions runs a sidecar and an app per instance of each version
(`catalog-v2-0`, `catalog-v2-0-app`), with the version's environment, module and faults.
The split between them is rendered into `deploy/compose/routing/`: the layer of a split
(`layers/<digest>/`, one file per version's cluster) and the link `current` to it, which
a new rendering swaps in one rename. Every Envoy that routes to a service with versions
mounts that directory at `containers.ROUTING_DIR` and reads the split through `current`,
so editing the weights in mesh.yaml and `meshctl render compose` changes the split of the
running containers, with no restart.

Every long-running container has a health check and starts only when what it needs is
healthy (or, for one-shot containers, has completed). Each Envoy container's bootstrap
is `envoy/<container>.yaml` (`meshctl render envoy`, the readable form of the mesh's Envoy
configuration), its SDS files and nats.conf are under `deploy/compose/`; all are mounted
read-only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mesh.control import edge_tls, envoy, natsconf, routing
from mesh.control.api import Api
from mesh.control.edge_tls import CopiedPair
from mesh.control.envoy import edge
from mesh.control.pki import MeshPKI
from mesh.control.plan import EdgePlan, InstancePlan, MeshPlan
from mesh.control.topology import Topology
from mesh.deploy import containers, monitoring
from mesh.deploy.containers import Certificate, Rendered
from mesh.runtime.events import NatsSettings

COMPOSE_FILE = "docker-compose.yml"
ENV_FILE = ".env"
#: The rendered files the compose file mounts, relative to the repository root.
FILES_DIR = Path("deploy/compose")
#: The Envoy containers' bootstraps, one file each (`meshctl render envoy`).
ENVOY_DIR = Path("envoy")
#: The split between services' versions: `layers/<digest>/` and the link `current` to one.
ROUTING_FILES_DIR = FILES_DIR / "routing"
#: Where the Envoys read the split through (`ROUTING_FILES_DIR`, mounted at ROUTING_DIR).
ROUTING_ROOT = containers.ROUTING_DIR / routing.CURRENT
JAEGER_HOST = "jaeger"
PROMETHEUS_HOST = "prometheus"
#: Compose's Prometheus configuration and rules (`mesh.deploy.monitoring`).
PROMETHEUS_FILES_DIR = FILES_DIR / "prometheus"
GRAFANA_HOST = "grafana"
#: Compose's Grafana provisioning and dashboards.
GRAFANA_FILES_DIR = FILES_DIR / "grafana"
NATS_HOST = "nats"
#: How often the certs container renews what is due (leaves live a day, renewed at half).
CERTIFICATE_CHECK_SECONDS = 600
#: The volume the edge companion writes the deny list of API keys into, for the edge.
EDGE_KEYS_VOLUME = "edge-keys"
#: The volume the user's own HTTPS certificate is copied into, for the edge.
EDGE_TLS_VOLUME = "edge-tls"
#: Where the directories of the user's certificate files are mounted, one each.
USER_TLS_DIR = Path("/etc/shop/user-tls")

_HEADER = (
    "# Rendered from mesh.yaml by `meshctl render compose`: do not edit by hand\n"
    "# (`make test` fails when this file differs from a fresh rendering).\n"
    '# `docker compose up --build`, then http://127.0.0.1:8080 (README: "Docker Compose").\n'
)


def versions() -> dict[str, str]:
    """What `.env` holds: the images, and where the edge and the trace UI are published on
    the host (loopback by default)."""
    return {
        **{f"{name.upper()}_IMAGE": image for name, image in containers.images().items()},
        "EDGE_PUBLISH": f"127.0.0.1:{containers.EDGE_PORT}",
        "EDGE_HTTPS_PUBLISH": f"127.0.0.1:{containers.EDGE_HTTPS_PORT}",
        "JAEGER_UI_PUBLISH": f"127.0.0.1:{containers.JAEGER_UI_PORT}",
        "PROMETHEUS_PUBLISH": f"127.0.0.1:{containers.PROMETHEUS_PORT}",
        "GRAFANA_PUBLISH": f"127.0.0.1:{containers.GRAFANA_PORT}",
    }


def _env_file() -> str:
    lines = [
        "# Image versions and published addresses for docker-compose.yml",
        "# (rendered by `meshctl render compose`; a shell variable of the same name wins).",
    ]
    lines += [f"{key}={value}" for key, value in versions().items()]
    return "\n".join(lines) + "\n"


def _health(test: list[str]) -> dict[str, Any]:
    return {
        "test": ["CMD", *test],
        "interval": "10s",
        "timeout": "3s",
        "retries": 3,
        "start_period": "60s",
        "start_interval": "1s",
    }


def _envoy_health() -> dict[str, Any]:
    """Envoy's readiness from inside its container, on the probe listener (its
    `/healthz/ready` is the admin `/ready`; the admin itself is a unix socket, which
    bash cannot speak to). The image has bash, not curl."""
    request = (
        f"exec 3<>/dev/tcp/127.0.0.1/{containers.PROBE_PORT}"
        f" && printf 'GET {envoy.READY_PATH} HTTP/1.1\\r\\nHost: localhost\\r\\n"
        "Connection: close\\r\\n\\r\\n' >&3"
        " && head -n 1 <&3 | grep -q ' 200 '"
    )
    return _health(["bash", "-c", request])


def _wget(url: str) -> dict[str, Any]:
    """An HTTP check where the image has BusyBox's wget (the nats and jaeger images)."""
    return _health(["wget", "-q", "-O", "/dev/null", url])


def _app_health() -> dict[str, Any]:
    return _health(
        ["python", "-m", "mesh.control.probe", "grpc", f"127.0.0.1:{containers.APP_PORT}"]
    )


def _done(*names: str) -> dict[str, dict[str, str]]:
    return {name: {"condition": "service_completed_successfully"} for name in names}


def _healthy(*names: str) -> dict[str, dict[str, str]]:
    return {name: {"condition": "service_healthy"} for name in names}


def _shop(**fields: Any) -> dict[str, Any]:
    """A container of the shop image (built from the Dockerfile here)."""
    return {"image": "${SHOP_IMAGE}", "build": {"context": "."}, "user": containers.USER, **fields}


def bootstrap_path(container: str) -> Path:
    """Where the bootstrap of the Envoy container `container` is rendered."""
    return ENVOY_DIR / f"{container}.yaml"


def _envoy_mounts(container: str, rendered: dict[str, str], files: dict[Path, str]) -> list[str]:
    """Place an Envoy container's files (its bootstrap in envoy/, its SDS files under
    deploy/compose/<container>/) and mount each as a file where Envoy looks for it; and the
    split's directory, whole (a link swapped inside it shows through), if it reads it."""
    mounts = []
    for name, text in rendered.items():
        bootstrap = name == containers.ENVOY_BOOTSTRAP
        source = bootstrap_path(container) if bootstrap else FILES_DIR / container / name
        files[source] = text
        mounts.append(f"./{source}:{containers.ENVOY_CONFIG_DIR / name}:ro")
    if containers.reads_split(rendered):
        mounts.append(f"./{ROUTING_FILES_DIR}:{containers.ROUTING_DIR}:ro")
    return mounts


def _envoy(mounts: list[str], **fields: Any) -> dict[str, Any]:
    return {
        "image": "${ENVOY_IMAGE}",
        "entrypoint": ["/usr/local/bin/envoy"],
        "command": containers.envoy_command(),
        "user": containers.USER,
        "volumes": [*mounts, f"pki:{containers.PKI_DIR}:ro"],
        "healthcheck": _envoy_health(),
        **fields,
    }


def _certificate(pki: MeshPKI, instance: str) -> Certificate:
    cert, key = pki.leaf_paths(instance)
    return Certificate(cert, key, pki.ca_path)


def _nats(topology: Topology, pki: MeshPKI, identity: str, instance: str) -> NatsSettings:
    return containers.nats_settings(topology, NATS_HOST, identity, _certificate(pki, instance))


def render(topology: Topology, api: Api) -> Rendered:
    """docker-compose.yml, .env and the files under deploy/compose/ for `topology`, the
    split's layer and link among them."""
    files = _files(topology, api)
    layer, links = split_layer(topology)
    return Rendered(
        {path: text for path, text in files.items() if ENVOY_DIR not in path.parents} | layer,
        owned=(FILES_DIR,),
        links=links,
    )


def split_layer(topology: Topology) -> tuple[dict[Path, str], dict[Path, str]]:
    """The layer of the split mesh.yaml gives, in a directory named by its content (so a
    rendering is the same every time, and a new split a new directory), and the link
    `current` to it; nothing without versions."""
    split = containers.split_files(topology)
    if not split:
        return {}, {}
    digest = hashlib.sha256("".join(f"{k}={v}\n" for k, v in split.items()).encode())
    layer = Path("layers") / digest.hexdigest()[:12]
    files = {ROUTING_FILES_DIR / layer / key: f"{share}\n" for key, share in split.items()}
    return files, {ROUTING_FILES_DIR / routing.CURRENT: str(layer)}


def render_envoy(topology: Topology, api: Api) -> Rendered:
    """envoy/: the bootstrap of every Envoy container of the compose file."""
    files = _files(topology, api)
    return Rendered(
        {path: text for path, text in files.items() if ENVOY_DIR in path.parents},
        owned=(ENVOY_DIR,),
        pattern="*.yaml",
    )


def instances_plan(topology: Topology) -> MeshPlan:
    """The plan of the compose file's containers: each instance reached by its name
    (`orders-0`, `catalog-v2-0`), which its certificate carries too."""
    return containers.plan(topology, lambda instance: instance.name, routing_root=ROUTING_ROOT)


def _files(topology: Topology, api: Api) -> dict[Path, str]:
    """Every file the compose file needs, by path relative to the repository."""
    topology = containers.with_collector(topology, JAEGER_HOST)
    plan = instances_plan(topology)
    pki = MeshPKI(containers.PKI_DIR, topology.trust_domain, topology.namespace)
    server_cert = _certificate(pki, natsconf.SERVER_IDENTITY)
    files = {
        FILES_DIR / "nats" / containers.NATS_CONFIG: containers.nats_config(topology, server_cert)
    }
    services = _platform(topology, pki)
    for instance in plan.instances:
        services.update(_instance(topology, plan, api, pki, instance, files))
    services[PROMETHEUS_HOST] = _prometheus(plan)
    services[GRAFANA_HOST] = _grafana()
    files.update(_monitoring_files(topology, plan))
    if plan.edge is not None:
        services.update(_edge(topology, plan, api, pki, files))
    document = {"name": "shop-mesh", "services": services, "volumes": _volumes(topology)}
    files[Path(COMPOSE_FILE)] = _HEADER + containers.dump(document)
    files[Path(ENV_FILE)] = _env_file()
    return files


def _volumes(topology: Topology) -> dict[str, dict[str, Any]]:
    names = ["pki", "nats-data", "edge-files", "prometheus-data"]
    if _user_certificate(topology) is not None:
        names.append(EDGE_TLS_VOLUME)
    if topology.edge.api_keys.plans:
        names.append(EDGE_KEYS_VOLUME)
    volumes: dict[str, dict[str, Any]] = {name: {} for name in names}
    volumes.update({f"{name}-data": {} for name in sorted(topology.services)})
    return volumes


def _platform(topology: Topology, pki: MeshPKI) -> dict[str, Any]:
    """The containers the services stand on: certificates, the event bus and tracing."""
    return {
        "certs": _certs(),
        "nats": _nats_server(),
        "events-init": _events_init(topology, pki),
        JAEGER_HOST: _jaeger(),
    }


def _certs() -> dict[str, Any]:
    run_dir = ["--run-dir", str(containers.STATE_DIR)]
    every = ["--every", str(CERTIFICATE_CHECK_SECONDS)]
    return _shop(
        command=["meshctl", "certs", "--issue", *every, *run_dir],
        # Mounted here first, the volumes take the image's ownership of these paths.
        volumes=[
            f"pki:{containers.PKI_DIR}",
            f"nats-data:{containers.NATS_DATA_DIR}",
        ],
        healthcheck={
            **_health(["meshctl", "certs", "--verify", *run_dir]),
            "interval": "60s",
        },
        restart="unless-stopped",
    )


def _nats_server() -> dict[str, Any]:
    return {
        "image": "${NATS_IMAGE}",
        "command": ["nats-server", "--config", f"{containers.NATS_CONFIG_DIR}/nats.conf"],
        "user": containers.USER,
        "volumes": [
            f"./{FILES_DIR / 'nats'}:{containers.NATS_CONFIG_DIR}:ro",
            f"pki:{containers.PKI_DIR}:ro",
            f"nats-data:{containers.NATS_DATA_DIR}",
        ],
        "healthcheck": _wget(
            f"http://127.0.0.1:{containers.NATS_MONITOR_PORT}/healthz?js-enabled-only=true"
        ),
        "depends_on": _healthy("certs"),
        "restart": "unless-stopped",
    }


def _events_init(topology: Topology, pki: MeshPKI) -> dict[str, Any]:
    admin = natsconf.ADMIN_IDENTITY
    return _shop(
        command=["meshctl", "events", "init"],
        environment=_nats(topology, pki, admin, admin).environment(),
        volumes=[f"pki:{containers.PKI_DIR}:ro"],
        depends_on=_healthy("nats"),
        restart="no",
    )


def _jaeger() -> dict[str, Any]:
    return {
        "image": "${JAEGER_IMAGE}",
        "ports": [f"${{JAEGER_UI_PUBLISH}}:{containers.JAEGER_UI_PORT}"],
        "healthcheck": _wget(f"http://127.0.0.1:{containers.JAEGER_HEALTH_PORT}/status"),
        "restart": "unless-stopped",
    }


def _prometheus(plan: MeshPlan) -> dict[str, Any]:
    """Prometheus: scrapes every instance, evaluates the alert rules; its UI (alerts,
    graphs) published on loopback."""
    return {
        "image": "${PROMETHEUS_IMAGE}",
        "command": [
            f"--config.file={monitoring.PROMETHEUS_CONFIG_DIR}/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
        ],
        "ports": [f"${{PROMETHEUS_PUBLISH}}:{containers.PROMETHEUS_PORT}"],
        "volumes": [
            f"./{PROMETHEUS_FILES_DIR}:{monitoring.PROMETHEUS_CONFIG_DIR}:ro",
            "prometheus-data:/prometheus",
        ],
        "healthcheck": _wget(f"http://127.0.0.1:{containers.PROMETHEUS_PORT}/-/ready"),
        "depends_on": _healthy(*(i.name for i in plan.instances)),
        "restart": "unless-stopped",
    }


def _grafana() -> dict[str, Any]:
    """Grafana with the mesh's dashboards over Prometheus; its UI published on loopback,
    open to anonymous viewers (the publish address is the operator's machine only)."""
    return {
        "image": "${GRAFANA_IMAGE}",
        "ports": [f"${{GRAFANA_PUBLISH}}:{containers.GRAFANA_PORT}"],
        "environment": {
            "GF_AUTH_ANONYMOUS_ENABLED": "true",
            "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer",
            "GF_ANALYTICS_REPORTING_ENABLED": "false",
        },
        "volumes": [
            f"./{GRAFANA_FILES_DIR}/provisioning:{monitoring.GRAFANA_PROVISIONING_DIR}:ro",
            f"./{GRAFANA_FILES_DIR}/dashboards:{monitoring.GRAFANA_DASHBOARDS_DIR}:ro",
        ],
        "healthcheck": _wget(f"http://127.0.0.1:{containers.GRAFANA_PORT}/api/health"),
        "depends_on": _healthy(PROMETHEUS_HOST),
        "restart": "unless-stopped",
    }


def _monitoring_files(topology: Topology, plan: MeshPlan) -> dict[Path, str]:
    """Prometheus's configuration and rules, Grafana's provisioning and dashboards."""
    provisioning = GRAFANA_FILES_DIR / "provisioning"
    prometheus_url = f"http://{PROMETHEUS_HOST}:{containers.PROMETHEUS_PORT}"
    files = {
        PROMETHEUS_FILES_DIR / "prometheus.yml": monitoring.compose_config(plan),
        PROMETHEUS_FILES_DIR / monitoring.RULES_FILE: monitoring.compose_rules(topology),
        provisioning / "datasources" / "prometheus.yml": monitoring.grafana_datasource(
            prometheus_url
        ),
        provisioning / "dashboards" / "shop.yml": monitoring.grafana_dashboards_provider(),
    }
    rendered = {path: containers.dump(document) for path, document in files.items()}
    for name, text in monitoring.dashboard_files(topology).items():
        rendered[GRAFANA_FILES_DIR / "dashboards" / name] = text
    return rendered


def _instance(
    topology: Topology,
    plan: MeshPlan,
    api: Api,
    pki: MeshPKI,
    instance: InstancePlan,
    files: dict[Path, str],
) -> dict[str, Any]:
    certificate = _certificate(pki, instance.name)
    rendered = containers.sidecar_files(topology, plan, instance, api, certificate)
    mounts = _envoy_mounts(instance.name, rendered, files)
    service = topology.services[instance.service]
    callees = [f"{peer.name}-app" for callee in sorted(service.calls) for peer in plan.of(callee)]
    nats = _nats(topology, pki, instance.service, instance.name)
    share = containers.cpu_share(topology, instance.service)
    # Docker's default is 1024 shares; a serving container keeps it.
    shares = {} if share == 1.0 else {"cpu_shares": round(1024 * share)}
    return {
        instance.name: _envoy(
            mounts,
            depends_on=_healthy("certs"),
            restart="unless-stopped",
            **shares,
        ),
        f"{instance.name}-app": _shop(
            **shares,
            command=containers.app_command(topology, instance),
            network_mode=f"service:{instance.name}",
            environment=containers.app_environment(topology, instance, nats),
            volumes=[
                f"pki:{containers.PKI_DIR}:ro",
                f"{instance.service}-data:{containers.RUN_DIR}",
            ],
            healthcheck=_app_health(),
            depends_on={
                **_healthy(instance.name, *callees),
                **_done("events-init"),
            },
            restart="unless-stopped",
        ),
    }


@dataclass(frozen=True)
class _UserCertificate:
    """The user's own HTTPS certificate (`edge.https.cert_file`) in Compose: copied into the
    volume `edge-tls` by `edge-files` before the edge starts, then by the companion each
    time it changes, from the files' directories, mounted read-only (`sources`)."""

    copied: CopiedPair
    sources: tuple[str, ...]

    @property
    def copying_mounts(self) -> list[str]:
        return [*self.sources, f"{EDGE_TLS_VOLUME}:{containers.EDGE_TLS_DIR}"]


def _user_certificate(topology: Topology) -> _UserCertificate | None:
    https = topology.edge.https
    if https is None or https.cert_file is None or https.key_file is None:
        return None
    written = [Path(https.cert_file), Path(https.key_file)]
    # Each file's directory, as mesh.yaml names it (relative to the repository, where this
    # file is), once: a directory, not the file, so a file replaced by a rename shows.
    directories = list(dict.fromkeys(path.parent for path in written))
    inside = {d: USER_TLS_DIR / str(i) for i, d in enumerate(directories)}
    cert, key = (inside[path.parent] / path.name for path in written)
    sources = tuple(f"{d if d.is_absolute() else f'./{d}'}:{inside[d]}:ro" for d in directories)
    return _UserCertificate(CopiedPair(cert, key, containers.EDGE_TLS_DIR), sources)


def _server_pair(topology: Topology, pki: MeshPKI) -> tuple[Path, Path] | None:
    """Where the edge finds its HTTPS certificate and key: the user's, copied, or the mesh
    CA's that `certs` issues and renews."""
    user = _user_certificate(topology)
    if user is not None:
        return user.copied.cert, user.copied.key
    if edge_tls.mesh_ca_issues(topology):
        return pki.leaf_paths(edge_tls.EDGE_HTTPS_INSTANCE)
    return None


def _edge_ports(plan: MeshPlan) -> list[str]:
    assert plan.edge is not None
    ports = [f"${{EDGE_PUBLISH}}:{containers.EDGE_PORT}"] if plan.edge.port else []
    if plan.edge.https_port:
        ports.append(f"${{EDGE_HTTPS_PUBLISH}}:{containers.EDGE_HTTPS_PORT}")
    return ports


def _edge(
    topology: Topology, plan: MeshPlan, api: Api, pki: MeshPKI, files: dict[Path, str]
) -> dict[str, Any]:
    assert plan.edge is not None
    rules = edge.resolve_rules(topology, api)
    edge_files = edge.files_in(containers.EDGE_FILES_DIR)
    certificate = _certificate(pki, "edge")
    rendered = containers.envoy_files(
        lambda sds: edge.edge_config(topology, plan, api, sds, edge_files),
        certificate,
        _server_pair(topology, pki),
    )
    mounts = _envoy_mounts("edge", rendered, files)
    user = _user_certificate(topology)
    if user is not None:
        mounts.append(f"{EDGE_TLS_VOLUME}:{containers.EDGE_TLS_DIR}:ro")
    if plan.edge.deny_list is not None:
        mounts.append(f"{EDGE_KEYS_VOLUME}:{plan.edge.deny_list_dir}:ro")
    exposed = [f"{peer.name}-app" for service in sorted(rules.exposed) for peer in plan.of(service)]
    return {
        "edge-files": _edge_files(user, plan.edge),
        "edge": _envoy(
            [*mounts, f"edge-files:{containers.EDGE_FILES_DIR}:ro"],
            ports=_edge_ports(plan),
            depends_on={**_healthy("certs"), **_done("edge-files"), **_healthy(*exposed)},
            restart="unless-stopped",
        ),
        "edge-companion": _edge_companion(rules, edge_files, plan.edge, user),
    }


def _edge_files(user: _UserCertificate | None, edge_plan: EdgePlan) -> dict[str, Any]:
    """Writes what the edge serves and the deny list of API keys it starts with, and
    copies the user's certificate for it first."""
    return _shop(
        command=[
            "meshctl", "render", "edge-files", str(containers.EDGE_FILES_DIR),
            *(user.copied.arguments() if user else []),
            *containers.deny_list_arguments(edge_plan),
        ],
        volumes=[
            f"edge-files:{containers.EDGE_FILES_DIR}", *(user.copying_mounts if user else []),
            *_deny_list_mounts(edge_plan),
        ],
        restart="no",
    )  # fmt: skip


def _deny_list_mounts(edge_plan: EdgePlan, mode: str = "") -> list[str]:
    """The volume of the deny list of API keys, if the edge takes them."""
    if edge_plan.deny_list is None:
        return []
    return [f"{EDGE_KEYS_VOLUME}:{edge_plan.deny_list}{mode}"]


def _edge_companion(
    rules: edge.EdgeRules,
    edge_files: edge.EdgeFiles,
    edge_plan: EdgePlan,
    user: _UserCertificate | None,
) -> dict[str, Any]:
    """Reflection of the public API and health, in the edge's network namespace; the
    user's certificate kept copied for the edge; the deny list of API keys kept for it."""
    arguments = edge.companion_arguments(
        rules, edge_plan, edge_files.descriptor_set, user.copied if user else None
    )
    probe = ["python", "-m", "mesh.control.probe", "grpc", f"127.0.0.1:{containers.COMPANION_PORT}"]
    return _shop(
        command=["python", *arguments],
        network_mode="service:edge",
        volumes=[
            f"edge-files:{containers.EDGE_FILES_DIR}:ro",
            *(user.copying_mounts if user else []),
            *_deny_list_mounts(edge_plan),
        ],
        healthcheck=_health(probe),
        depends_on={"edge": {"condition": "service_started"}},
        restart="unless-stopped",
    )
