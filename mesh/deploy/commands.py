"""`meshctl render ...`, `meshctl certs --issue`, `meshctl events init`: the mesh beyond
one machine.

`render compose`, `render k8s` and `render envoy` write the committed deploy files and
Envoy configuration from mesh.yaml and the contracts; `make test` renders them again and
fails when the committed ones differ. The
other commands run inside containers, where the mesh has no supervisor: one-shot
containers issue the certificates, write the edge's files and create the streams and
consumers, as `meshctl up` does before it starts anything.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from pathlib import Path

from mesh.control import conformance, contracts, edge_tls, natsconf
from mesh.control.api import Api
from mesh.control.certfiles import PKIError
from mesh.control.edge_tls import CopiedPair
from mesh.control.envoy import edge
from mesh.control.pki import CertificateInfo, MeshPKI, utc_now
from mesh.control.topology import Topology
from mesh.deploy import compose, kube
from mesh.deploy.containers import Rendered
from mesh.runtime.events import NatsSettings

#: What `meshctl render TARGET` writes.
TARGETS = ("compose", "k8s", "envoy")


class DeployError(RuntimeError):
    """A deploy command cannot do what was asked; the message says why."""


def api_of(root: Path, topology: Topology) -> Api:
    """The contracts, once `topology` was found to fit them (`mesh.control.conformance`)."""
    descriptor_set = root / contracts.DESCRIPTOR_SET
    if not descriptor_set.is_file():
        raise DeployError(f"{descriptor_set} is missing: run `make gen` first")
    api = Api.from_descriptor_set(descriptor_set)
    problems = conformance.problems(topology, api)
    if problems:
        raise DeployError(conformance.told_together(problems, "nothing rendered"))
    return api


def rendered(root: Path, topology: Topology, target: str) -> Rendered:
    """Every file `meshctl render <target>` writes (compose, k8s or envoy)."""
    api = api_of(root, topology)
    if target == "compose":
        return compose.render(topology, api)
    if target == "envoy":
        return compose.render_envoy(topology, api)
    return kube.render(topology, api)


def render(root: Path, topology: Topology, target: str, check: bool) -> int:
    """Write the files of `target`, or with `check` only report the stale ones."""
    files = rendered(root, topology, target)
    if check:
        stale = files.stale(root)
        for path in stale:
            print(f"stale: {path} (run `meshctl render {target}`)")
        return 1 if stale else 0
    for path in files.write(root):
        print(f"wrote {path}")
    return 0


def write_edge_files(
    root: Path,
    topology: Topology,
    directory: Path,
    copied: CopiedPair | None = None,
    deny_list_dir: Path | None = None,
) -> int:
    """The descriptor set, OpenAPI document and docs page the edge serves, in `directory`;
    with `copied`, the user's HTTPS certificate copied for the edge first (nothing is
    written if it cannot be served); with `deny_list_dir`, the deny list of API keys the
    edge starts with, there."""
    api = api_of(root, topology)
    if copied is not None:
        try:
            certificate = edge_tls.copy_pair(copied)
        except edge_tls.EdgeTlsError as error:
            raise DeployError(f"the edge's HTTPS certificate: {error}") from None
        print(f"copied the certificate with serial {certificate.serial_number:x} to {copied.into}")
    rules = edge.resolve_rules(topology, api)
    descriptor_set = root / contracts.DESCRIPTOR_SET
    edge_plan = compose.instances_plan(topology).edge
    assert edge_plan is not None, "nothing is exposed: the edge has no files"
    url = edge.client_url(topology, edge_plan)
    files = edge.write_files(directory, descriptor_set, topology, rules, url, deny_list_dir)
    print(f"wrote the edge's files to {files.openapi.parent}")
    if deny_list_dir is not None:
        print(f"wrote the deny list of API keys the edge starts with to {deny_list_dir}")
    return 0


def needed_leaves(topology: Topology) -> list[tuple[str, str]]:
    """(identity, instance) of every leaf the mesh needs, named as in `meshctl up` and
    Compose: one per instance (`orders-0`; `catalog-v2-0` of a version, with the service's
    identity), the edge, NATS and meshctl."""
    instances = compose.instances_plan(topology).instances
    leaves = [(instance.service, instance.name) for instance in instances]
    identities = ("edge", natsconf.SERVER_IDENTITY, natsconf.ADMIN_IDENTITY)
    return leaves + [(identity, identity) for identity in identities]


def issue_certificates(topology: Topology, pki: MeshPKI) -> list[CertificateInfo]:
    """The CA and every leaf the mesh needs, the edge's HTTPS certificate among them when
    the mesh CA issues it; good ones are kept."""
    pki.ensure_ca()
    for identity, instance in needed_leaves(topology):
        pki.ensure(identity, instance)
    if topology.edge.https is not None and edge_tls.mesh_ca_issues(topology):
        pki.ensure_server(edge_tls.EDGE_HTTPS_INSTANCE, edge_tls.server_names(topology.edge.https))
    return pki.inspect()


def certificate_problems(topology: Topology, pki: MeshPKI) -> list[str]:
    """What stops the mesh's certificates from being good now (empty when none)."""
    try:
        issued = {info.instance: info for info in pki.inspect()}
    except PKIError as error:
        return [str(error)]
    now = utc_now()
    problems = []
    for identity, instance in needed_leaves(topology):
        info = issued.get(instance)
        if info is None or info.spiffe_id != pki.spiffe_id(identity):
            problems.append(f"{instance}: no certificate for {identity}")
        elif pki.needs_renewal(info, now):
            problems.append(_due(info))
    if edge_tls.mesh_ca_issues(topology):
        info = issued.get(edge_tls.EDGE_HTTPS_INSTANCE)
        if info is None or info.spiffe_id is not None:
            problems.append(f"{edge_tls.EDGE_HTTPS_INSTANCE}: no certificate for the edge's HTTPS")
        elif pki.needs_renewal(info, now):
            problems.append(_due(info))
    return problems


def _due(info: CertificateInfo) -> str:
    return f"{info.instance}: due for renewal (expires {info.not_after:%Y-%m-%d %H:%M})"


def verify_certificates(topology: Topology, pki: MeshPKI) -> int:
    """`meshctl certs --verify`: exit 0 only when every certificate is there and good."""
    problems = certificate_problems(topology, pki)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


def keep_certificates(topology: Topology, pki: MeshPKI, every: float) -> int:
    """`meshctl certs --issue --every SECONDS`: issue, then renew what falls due, until
    SIGTERM or SIGINT. Envoys load renewed certificates from their watched directories."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while True:
        infos = issue_certificates(topology, pki)
        print(f"{len(infos)} certificates good; next check in {every:g}s", flush=True)
        if stop.wait(every):
            return 0


#: How long `events init` keeps trying a JetStream that does not take the streams yet: a
#: cluster still electing its leader, or its peers not all caught up for replicas of 3.
EVENTS_INIT_WAIT_SECONDS = 60.0
#: The pause between two tries.
EVENTS_INIT_RETRY_SECONDS = 1.0


def init_events(
    topology: Topology, stream_replicas: int, wait: float = EVENTS_INIT_WAIT_SECONDS
) -> int:
    """Create the streams and every consumer, as meshctl (settings from `SHOP_NATS_*`),
    trying again for up to `wait` seconds while NATS or its JetStream does not answer
    (a Job started beside a StatefulSet that is still forming); then one line says why."""
    if not os.environ.get("SHOP_NATS_URL"):
        raise DeployError("set SHOP_NATS_URL (and SHOP_NATS_CA_FILE, _CERT_FILE, _KEY_FILE)")
    settings = NatsSettings.from_environment(natsconf.ADMIN_IDENTITY, dict(os.environ))
    asyncio.run(_event_bus_prepared(settings, topology, stream_replicas, wait))
    consumers = sorted(name for name, service in topology.services.items() if service.consumes)
    print(f"streams ready ({stream_replicas} replicas); consumers: {', '.join(consumers)}")
    return 0


async def _event_bus_prepared(
    settings: NatsSettings, topology: Topology, stream_replicas: int, wait: float
) -> None:
    deadline = time.monotonic() + wait
    while True:
        try:
            # each try connects once: the retries are these, bounded by `wait`
            await natsconf.prepare_event_bus(
                settings, topology, stream_replicas, **natsconf.ONE_ATTEMPT
            )
            return
        except natsconf.UNREACHABLE as error:
            if time.monotonic() >= deadline:
                raise DeployError(
                    f"JetStream at {settings.url} did not take the streams within {wait:g} s:"
                    f" {type(error).__name__} {error}".rstrip()
                ) from None
        await asyncio.sleep(EVENTS_INIT_RETRY_SECONDS)


def print_secrets(topology: Topology, run_dir: Path) -> int:
    """`meshctl render k8s-secrets`: the dev overlay's identity Secrets on stdout."""
    pki = MeshPKI(run_dir / "k8s-pki", topology.trust_domain, topology.namespace)
    print(kube.secrets(topology, pki), end="")
    return 0
