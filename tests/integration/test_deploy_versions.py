"""A service with versions in containers: mesh.yaml with catalog in two versions, rendered
for Compose and Kubernetes into the test's directory and checked as the committed files
are (the Compose specification, kustomize and the Kubernetes schemas, `envoy --mode
validate` with the split's directory laid out as the container gets it), and the split
followed by a real Envoy when a new rendering (Compose) or the kubelet (a ConfigMap's
`..data`) swaps its link."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.control import envoy
from mesh.control.plan import free_port
from mesh.control.topology import Topology, parse
from mesh.deploy import compose, containers, kube
from mesh.deploy.commands import needed_leaves, rendered
from mesh.deploy.kube.objects import ROUTING_CONFIG_MAP, ROUTING_ROOT
from tests.support.deploy import (
    ROOT,
    by_kind,
    cluster_hosts,
    compose_spec_check,
    container_root,
    documents,
    envoy_refusal,
    kustomized,
    unknown_to_schemas,
)
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

_STABLE = "{replicas: 2, weight: %d}"
_CANARY = (
    '{weight: %d, env: {CATALOG_CANARY: "1"}, module: services.catalog.next,'
    " faults: {abort: {percent: %d}}}"
)
_HASH = "shop.mesh/config-hash"
#: The kubelet's link to a ConfigMap mount's current files, which Envoy reads through.
_DATA = ROUTING_ROOT.name


def versioned(stable: int = 90, canary: int = 10, aborts: int = 5) -> Topology:
    """The repository's mesh.yaml with catalog in two versions: v1 (two replicas) and v2
    (its own environment, module and faults), split `stable`/`canary`."""
    text = (ROOT / "mesh.yaml").read_text()
    catalog = "  catalog:\n    replicas: 1\n"
    assert catalog in text
    versions = (
        f"    versions:\n      v1: {_STABLE % stable}\n      v2: {_CANARY % (canary, aborts)}\n"
    )
    return parse(text.replace(catalog, catalog + versions, 1))


def _render(topology: Topology, root: Path) -> Path:
    """Every target of `meshctl render`, for `topology`, into `root`."""
    for target in ("compose", "envoy", "k8s"):
        files = rendered(ROOT, topology, target)
        files.write(root)
        assert files.stale(root) == []
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _render(versioned(), tmp_path_factory.mktemp("versioned"))


def _base(root: Path, part: str) -> list[dict[str, Any]]:
    return documents((root / kube.BASE / f"{part}.yaml").read_text())


def _bootstrap(objects: list[dict[str, Any]], config_map: str) -> dict[str, Any]:
    data = by_kind(objects, "ConfigMap")[config_map]["data"]
    config: dict[str, Any] = yaml.safe_load(data[containers.ENVOY_BOOTSTRAP])
    return config


def _pod(objects: list[dict[str, Any]], deployment: str) -> dict[str, Any]:
    pod: dict[str, Any] = by_kind(objects, "Deployment")[deployment]["spec"]["template"]["spec"]
    return pod


def _split_routes(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The weighted clusters of every route of `config` that splits its calls."""
    return [
        route["route"]["weighted_clusters"]
        for listener in config["static_resources"]["listeners"]
        for chain in listener["filter_chains"]
        for network_filter in chain["filters"]
        for host in network_filter["typed_config"].get("route_config", {}).get("virtual_hosts", [])
        for route in host["routes"]
        if "weighted_clusters" in route.get("route", {})
    ]


# -- Kubernetes --------------------------------------------------------------------------


def test_kubernetes_runs_a_deployment_and_a_headless_service_per_version(root: Path) -> None:
    catalog = _base(root, "catalog")
    assert [(o["kind"], o["metadata"]["name"]) for o in catalog] == [
        ("ServiceAccount", "catalog"),
        *[
            (kind, f"catalog-{version}{suffix}")
            for version in ("v1", "v2")
            for kind, suffix in (
                ("ConfigMap", "-envoy"), ("Service", ""), ("Deployment", ""),
                ("PodDisruptionBudget", ""),
            )
        ],
    ]  # fmt: skip
    for version, replicas in (("v1", 2), ("v2", 1)):
        name, labels = f"catalog-{version}", {"app": "catalog", "version": version}
        deployment = by_kind(catalog, "Deployment")[name]
        assert deployment["spec"]["replicas"] == replicas
        assert deployment["spec"]["selector"] == {"matchLabels": labels}
        assert labels.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        pod = _pod(catalog, name)
        assert pod["serviceAccountName"] == "catalog"
        identity = next(v for v in pod["volumes"] if v["name"] == "identity")
        assert identity["secret"]["secretName"] == "catalog-identity"
        headless = by_kind(catalog, "Service")[name]["spec"]
        assert (headless["selector"], headless["clusterIP"]) == (labels, "None")
        assert by_kind(catalog, "PodDisruptionBudget")[name]["spec"]["selector"] == {
            "matchLabels": labels
        }
    stable, canary = (_pod(catalog, f"catalog-{v}")["containers"][0] for v in ("v1", "v2"))
    assert stable["command"][:3] == ["python", "-m", "services.catalog"]
    assert canary["command"][:3] == ["python", "-m", "services.catalog.next"]
    assert {"name": "CATALOG_CANARY", "value": "1"} in canary["env"]
    assert all(entry["name"] != "CATALOG_CANARY" for entry in stable["env"])
    # Each version's sidecar: its faults, and its name on every answer.
    v1, v2 = (_bootstrap(catalog, f"catalog-{v}-envoy") for v in ("v1", "v2"))
    assert "envoy.filters.http.fault" in json.dumps(v2)
    assert "envoy.filters.http.fault" not in json.dumps(v1)
    assert v2["node"] == {"id": "catalog-v2-0", "cluster": "catalog"}
    assert '"value": "v2"' in json.dumps(v2)


def _routing_mounts(pod: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Each container's mounts of the split's volume, by container."""
    return {
        container["name"]: [m for m in container.get("volumeMounts", []) if m["name"] == "routing"]
        for container in pod.get("initContainers", []) + pod["containers"]
    }


def test_callers_reach_each_version_by_its_service_and_split_by_the_config_map(
    root: Path,
) -> None:
    [routing] = _base(root, "routing")
    assert routing["metadata"]["name"] == ROUTING_CONFIG_MAP
    assert routing["data"] == {"routing.catalog_v1": "90", "routing.catalog_v2": "10"}
    assert (
        "routing.yaml"
        in yaml.safe_load((root / kube.BASE / "kustomization.yaml").read_text())["resources"]
    )
    mount = {"name": "routing", "mountPath": "/etc/shop/routing", "readOnly": True}
    for part, deployment in (("orders", "orders"), ("edge", "edge")):
        objects = _base(root, part)
        config = _bootstrap(objects, f"{deployment}-envoy")
        [layer] = config["layered_runtime"]["layers"]
        assert layer["disk_layer"]["symlink_root"] == "/etc/shop/routing/..data"
        for version in ("v1", "v2"):
            assert cluster_hosts(config, f"catalog_{version}") == [
                (f"catalog-{version}.shop.svc.cluster.local", containers.INBOUND_PORT)
            ]
        splits = _split_routes(config)
        assert splits, f"{part} splits no call"
        for split in splits:
            assert split["runtime_key_prefix"] == "routing"
            assert [c["name"] for c in split["clusters"]] == ["catalog_v1", "catalog_v2"]
        pod = _pod(objects, deployment)
        mounts = _routing_mounts(pod)
        assert mounts.pop("envoy") == [mount], "the whole ConfigMap, in Envoy only (no subPath)"
        assert all(not found for found in mounts.values())
        assert {"name": "routing", "configMap": {"name": ROUTING_CONFIG_MAP}} in pod["volumes"]
    # An Envoy that routes to no service with versions has no split to read.
    inventory = _base(root, "inventory")
    assert "layered_runtime" not in _bootstrap(inventory, "inventory-envoy")
    assert _routing_mounts(_pod(inventory, "inventory")) == {"envoy": [], "app": []}


def _hashes(root: Path) -> dict[str, str]:
    """Every Deployment's configuration hash, by name."""
    return {
        name: deployment["spec"]["template"]["metadata"]["annotations"][_HASH]
        for path in sorted((root / kube.BASE).glob("*.yaml"))
        for name, deployment in by_kind(documents(path.read_text()), "Deployment").items()
        if _HASH in deployment["spec"]["template"]["metadata"].get("annotations", {})
    }


def test_a_new_split_changes_the_config_map_alone_and_rolls_no_pod(
    root: Path, tmp_path: Path
) -> None:
    changed = _render(versioned(stable=50, canary=50), tmp_path / "split")
    [routing] = _base(changed, "routing")
    assert routing["data"] == {"routing.catalog_v1": "50", "routing.catalog_v2": "50"}
    assert _hashes(changed) == _hashes(root)
    # A changed configuration still rolls the pods that run it, and only those.
    faults = _hashes(_render(versioned(aborts=50), tmp_path / "faults"))
    assert [name for name, digest in faults.items() if _hashes(root)[name] != digest] == [
        "catalog-v2"
    ]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_overlays_build_with_versions_and_every_object_validates(
    root: Path, overlay: str
) -> None:
    objects = kustomized(root / kube.K8S_DIR / "overlays" / overlay)
    assert unknown_to_schemas(objects) == []
    deployments = by_kind(objects, "Deployment")
    assert "catalog" not in deployments
    for name in ("catalog-v1", "catalog-v2"):
        spec = deployments[name]["spec"]
        if overlay == "dev":
            assert spec["replicas"] == 1
        else:
            app = spec["template"]["spec"]["containers"][0]
            url = next(e for e in app["env"] if e["name"] == "SHOP_CATALOG_DATABASE_URL")
            assert url["valueFrom"]["secretKeyRef"] == {"name": "catalog-database", "key": "url"}
    assert by_kind(objects, "ConfigMap")[ROUTING_CONFIG_MAP]["metadata"]["namespace"] == "shop"


# -- Compose -----------------------------------------------------------------------------


def test_compose_runs_every_instance_of_each_version_and_mounts_the_split(root: Path) -> None:
    services = yaml.safe_load((root / compose.COMPOSE_FILE).read_text())["services"]
    instances = ["catalog-v1-0", "catalog-v1-1", "catalog-v2-0"]
    assert [n for n in services if n.startswith("catalog")] == [
        name for instance in instances for name in (instance, f"{instance}-app")
    ]
    for instance in instances:
        app = services[f"{instance}-app"]
        assert app["environment"]["SHOP_INSTANCE"] == instance
        assert app["network_mode"] == f"service:{instance}"
        assert f"{instance}-app" in services["orders-0-app"]["depends_on"]
        canary = instance.startswith("catalog-v2")
        assert ("CATALOG_CANARY" in app["environment"]) is canary
        assert app["command"][2] == ("services.catalog.next" if canary else "services.catalog")
    mount = "./deploy/compose/routing:/etc/shop/routing:ro"
    assert [n for n, s in services.items() if mount in s.get("volumes", [])] == ["orders-0", "edge"]
    layer = root / compose.ROUTING_FILES_DIR / "current"
    assert os.readlink(layer).startswith("layers/")
    assert {p.name: p.read_text() for p in layer.iterdir()} == {
        "routing.catalog_v1": "90\n", "routing.catalog_v2": "10\n",
    }  # fmt: skip
    caller = yaml.safe_load((root / compose.bootstrap_path("orders-0")).read_text())
    assert caller["layered_runtime"]["layers"][0]["disk_layer"]["symlink_root"] == (
        "/etc/shop/routing/current"
    )
    assert cluster_hosts(caller, "catalog_v1") == [("catalog-v1-0", 15006), ("catalog-v1-1", 15006)]
    assert cluster_hosts(caller, "catalog_v2") == [("catalog-v2-0", 15006)]
    result = compose_spec_check(root / compose.COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr
    for name, service in services.items():
        for source in (m.split(":")[0] for m in service.get("volumes", [])):
            assert not source.startswith("./") or (root / source).exists(), f"{name}: {source}"
    leaves = needed_leaves(versioned())
    assert {("catalog", instance) for instance in instances} <= set(leaves)
    assert ("catalog", "catalog-0") not in leaves


# -- Envoy, for real ---------------------------------------------------------------------


def _config_map_mount(directory: Path, files: dict[str, str], stamp: str) -> None:
    """Lay out (or update) `directory` as the kubelet does a ConfigMap's mount: the files in
    a directory of their own, the link `..data` to it swapped in one rename."""
    (directory / stamp).mkdir(parents=True)
    for name, text in files.items():
        (directory / stamp / name).write_text(text)
    (directory / "..data_tmp").symlink_to(stamp)
    os.replace(directory / "..data_tmp", directory / _DATA)


def _envoy_jobs(root: Path) -> list[tuple[str, dict[str, str], Path | dict[str, str] | None]]:
    """(name, files, what its routing directory holds) of a caller, the edge and a version,
    as Compose and Kubernetes run them: the Compose directory, the ConfigMap's data, or None
    where the container mounts none."""
    services = yaml.safe_load((root / compose.COMPOSE_FILE).read_text())["services"]
    routing = by_kind(_base(root, "routing"), "ConfigMap")[ROUTING_CONFIG_MAP]["data"]
    jobs: list[tuple[str, dict[str, str], Path | dict[str, str] | None]] = []
    for container in ("orders-0", "edge", "catalog-v2-0"):
        sds = root / compose.FILES_DIR / container
        files = {p.name: p.read_text() for p in sds.iterdir()}
        files[containers.ENVOY_BOOTSTRAP] = (root / compose.bootstrap_path(container)).read_text()
        mounted = any("/etc/shop/routing" in m for m in services[container]["volumes"])
        jobs.append((container, files, root / compose.ROUTING_FILES_DIR if mounted else None))
    for part, deployment in (("orders", "orders"), ("edge", "edge"), ("catalog", "catalog-v2")):
        objects = _base(root, part)
        data = by_kind(objects, "ConfigMap")[f"{deployment}-envoy"]["data"]
        mounted = bool(_routing_mounts(_pod(objects, deployment))["envoy"])
        jobs.append((f"k8s {deployment}", data, routing if mounted else None))
    return jobs


def test_every_envoy_accepts_its_versioned_configuration_with_its_mounts(
    root: Path, tmp_path: Path
) -> None:
    """Envoy refuses a layered runtime whose directory is missing (it cannot watch it), so
    each container gets the routing directory only if its rendering mounts one."""
    jobs = _envoy_jobs(root)
    assert [routing is not None for _, _, routing in jobs] == [True, True, False] * 2
    instances = [p.name for p in (root / compose.FILES_DIR).iterdir()]
    failures = []
    for index, (name, files, routing) in enumerate(jobs):
        container = container_root(tmp_path, f"c{index}", versioned(), instances)
        mount = Path(f"{container}{containers.ROUTING_DIR}")
        if isinstance(routing, Path):
            shutil.copytree(routing, mount, symlinks=True)
        elif routing is not None:
            _config_map_mount(mount, routing, "..2026_01_01_00_00_00.1")
        refused, why = envoy_refusal(name, files, container)
        failures += [f"{refused}: {why}"] if why else []
    assert failures == []


@contextlib.contextmanager
def _envoy_reading(symlink_root: Path, directory: Path) -> Iterator[int]:
    """A real Envoy with only an admin port and the split's layer read through
    `symlink_root`, as the mesh's bootstraps have it; its admin port. Stopped by its pid."""
    port = free_port()
    bootstrap = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}},
        "layered_runtime": {
            "layers": [
                {
                    "name": "split",
                    "disk_layer": {"symlink_root": str(symlink_root), "subdirectory": ""},
                }
            ]
        },
    }
    config = directory / "envoy.yaml"
    config.write_text(json.dumps(bootstrap))
    process = subprocess.Popen(
        envoy.command(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield port
    finally:
        process.terminate()
        process.wait(10)


def _runtime(port: int) -> dict[str, str]:
    """The runtime values a running Envoy holds, by key."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/runtime", timeout=2) as response:
            entries = json.load(response)["entries"]
    except OSError:
        return {}
    return {key: entry["final_value"] for key, entry in entries.items()}


def _holds(port: int, split: dict[str, str]) -> bool:
    return split.items() <= _runtime(port).items()


def test_a_new_compose_rendering_reaches_a_running_envoy(tmp_path: Path) -> None:
    """`meshctl render compose` after the weights changed: the new layer, then the link
    swapped, which the Envoy reading through it follows without a restart."""
    _render(versioned(), tmp_path)
    split = tmp_path / compose.ROUTING_FILES_DIR
    with _envoy_reading(split / "current", tmp_path) as port:
        wait_until(lambda: _holds(port, {"routing.catalog_v2": "10"}), "Envoy reading 90/10")
        old_layer = os.readlink(split / "current")
        rendered(ROOT, versioned(stable=25, canary=75), "compose").write(tmp_path)
        wait_until(
            lambda: _holds(port, {"routing.catalog_v1": "25", "routing.catalog_v2": "75"}),
            lambda: f"Envoy reading 25/75, not {_runtime(port)}",
        )
    assert not (split / old_layer).exists()


def test_a_config_map_update_reaches_a_running_envoy_through_its_data_link(
    tmp_path: Path,
) -> None:
    """What the kubelet does when `kubectl apply` changes `mesh-routing`: new files in a new
    directory, `..data` swapped onto it in one rename. Envoy watches the mount for that."""
    mount = tmp_path / "routing"
    _config_map_mount(mount, {"routing.catalog_v1": "90", "routing.catalog_v2": "10"}, "..one")
    with _envoy_reading(mount / _DATA, tmp_path) as port:
        wait_until(lambda: _holds(port, {"routing.catalog_v1": "90"}), "Envoy reading 90/10")
        _config_map_mount(mount, {"routing.catalog_v1": "0", "routing.catalog_v2": "100"}, "..two")
        wait_until(
            lambda: _holds(port, {"routing.catalog_v1": "0", "routing.catalog_v2": "100"}),
            lambda: f"Envoy reading 0/100, not {_runtime(port)}",
        )
