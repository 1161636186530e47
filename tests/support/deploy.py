"""The committed deploy files, as the deploy tests read them, and the checks every
rendering goes through: kustomize and the Kubernetes schemas, the Compose specification,
`envoy --mode validate` in a directory laid out like the container."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mesh.control import edge_tls
from mesh.control.pki import MeshPKI
from mesh.control.topology import Topology, load
from mesh.deploy import compose, containers, kube
from tests.support import envoy_validation

ROOT = Path(__file__).resolve().parents[2]
MESHCTL = [sys.executable, "-m", "mesh.cli"]
#: Absolute paths the containers see; a test maps them into its own directory.
CONTAINER_PATHS = (
    "/etc/envoy", "/etc/shop/identity", "/etc/shop/edge-tls", "/etc/shop/routing",
    "/shop/pki", "/shop/edge-tls", "/shop/edge", "/shop/nats",
)  # fmt: skip
#: Kinds from CRDs, which the Kubernetes schemas do not know (checked field by field).
CRD_KINDS = {("cert-manager.io/v1", "Certificate"), ("keda.sh/v1alpha1", "ScaledObject")}


def repository_topology() -> Topology:
    return load(ROOT / "mesh.yaml")


def committed_compose_file() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / compose.COMPOSE_FILE).read_text())
    return document


def documents(text: str) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(text) if document]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def kustomized(directory: Path) -> list[dict[str, Any]]:
    """What `kubectl apply -k` would apply: the built overlay (or base)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed here, so kustomize cannot build the overlays")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return documents(result.stdout)


def unknown_to_schemas(objects: list[dict[str, Any]]) -> list[str]:
    """Validate every object against the Kubernetes schemas, strictly (an invalid one
    raises); the kinds the schemas do not know, besides the CRDs' (none is expected)."""
    unknown = []
    for item in objects:
        if (item["apiVersion"], item["kind"]) in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(item, kube.KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unknown.append(f"{item['apiVersion']} {item['kind']}")
    return unknown


def compose_spec_check(path: Path) -> subprocess.CompletedProcess[str]:
    """`path` checked against the Compose specification."""
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--builtin-schema", "vendor.compose-spec",
            str(path),
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def cluster_hosts(config: dict[str, Any], cluster: str) -> list[tuple[str, int]]:
    """The (host, port) of each endpoint of `cluster` in an Envoy bootstrap."""
    for entry in config["static_resources"]["clusters"]:
        if entry["name"] == cluster:
            return [
                (
                    endpoint["endpoint"]["address"]["socket_address"]["address"],
                    endpoint["endpoint"]["address"]["socket_address"]["port_value"],
                )
                for group in entry["load_assignment"]["endpoints"]
                for endpoint in group["lb_endpoints"]
            ]
    raise KeyError(cluster)


#: One of the containers' paths where it starts a path (the longest that fits), so a path
#: inside another (/shop/edge in /shop/edge-tls) is moved once.
_CONTAINER_PATH = re.compile(
    r"(?<![\w./-])("
    + "|".join(map(re.escape, sorted(CONTAINER_PATHS, key=len, reverse=True)))
    + ")"
)


def map_paths(text: str, root: Path) -> str:
    """`text` with the containers' absolute paths moved under `root`."""
    return _CONTAINER_PATH.sub(lambda match: f"{root}{match[1]}", text)


def envoy_refusal(name: str, files: dict[str, str], root: Path) -> tuple[str, str]:
    """Write an Envoy container's files with its paths under `root`; `envoy --mode validate`,
    deprecated fields refused: `name`, and why Envoy refuses it ("" if not)."""
    config_dir = Path(f"{root}/etc/envoy")
    if config_dir.exists():
        shutil.rmtree(config_dir)
    config_dir.mkdir(parents=True)
    for file_name, text in files.items():
        (config_dir / file_name).write_text(map_paths(text, root))
    return name, envoy_validation.refusal(config_dir / containers.ENVOY_BOOTSTRAP)


def container_root(tmp_path: Path, name: str, topology: Topology, instances: Iterable[str]) -> Path:
    """A directory laid out like a container: certificates (the identity Secret's, the
    edge's HTTPS Secret's, one per Compose instance in `instances`, the mesh CA's for the
    edge's HTTPS), the edge's files and the deny list of API keys it starts with."""
    root = tmp_path / name
    pki = MeshPKI(Path(f"{root}/shop/pki"), topology.trust_domain, topology.namespace)
    info = pki.ensure("orders", name)
    for secret in ("identity", "edge-tls"):
        directory = Path(f"{root}/etc/shop/{secret}")
        directory.mkdir(parents=True)
        for source, target in (
            (info.cert_path, "tls.crt"), (info.key_path, "tls.key"), (pki.ca_path, "ca.crt")
        ):  # fmt: skip
            shutil.copyfile(source, directory / target)
    for instance in instances:
        pki.ensure("orders", instance)
    pki.ensure_server(edge_tls.EDGE_HTTPS_INSTANCE, edge_tls.LOCAL_NAMES)
    subprocess.run(
        [*MESHCTL, "render", "edge-files", f"{root}/shop/edge",
         "--deny-list", f"{root}{containers.EDGE_KEYS_DIR}"],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    return root
