"""Autoscaled services rendered for Kubernetes: mesh.yaml with catalog scaling on CPU,
orders on calls in flight and inventory on its consumer's lag. The prod overlay (whose
replicas share Postgres) builds, its HPA validates against the Kubernetes schemas, its
KEDA ScaledObjects (a CRD) are checked field by field, and the Deployments leave their
replicas to them; dev stays at one replica each; the local mesh's plan gives every
replica its place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mesh.control.plan import make_plan
from mesh.control.topology import Topology, parse
from mesh.deploy import kube
from mesh.deploy.commands import rendered
from mesh.deploy.kube.autoscaling import PROMETHEUS_URL
from mesh.runtime.events import EVENTS_STREAM
from tests.support.deploy import ROOT, by_kind, kustomized, unknown_to_schemas
from tests.support.promql import parse_errors

pytestmark = pytest.mark.integration

SCALING = {
    "catalog": "{min: 1, max: 4, target: {cpu: 70}, cooldown: 2m}",
    "orders": "{min: 2, max: 5, target: {in_flight: 3}}",
    "inventory": "{min: 1, max: 3, target: {consumer_lag: 100}}",
}


def autoscaled() -> Topology:
    """The repository's mesh.yaml with `SCALING`'s services autoscaled."""
    text = (ROOT / "mesh.yaml").read_text()
    for name, spec in SCALING.items():
        replicas = f"  {name}:\n    replicas: 1\n"
        assert replicas in text
        text = text.replace(replicas, f"  {name}:\n    autoscale: {spec}\n", 1)
    return parse(text)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("autoscaled")
    files = rendered(ROOT, autoscaled(), "k8s")
    files.write(directory)
    return directory


@pytest.fixture(scope="module")
def prod(root: Path) -> list[dict[str, Any]]:
    return kustomized(root / kube.PROD)


def test_prod_builds_and_its_hpa_validates(prod: list[dict[str, Any]]) -> None:
    assert unknown_to_schemas(prod) == []
    [hpa] = by_kind(prod, "HorizontalPodAutoscaler").values()
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "catalog",
    }
    assert (spec["minReplicas"], spec["maxReplicas"]) == (1, 4)
    [metric] = spec["metrics"]
    target = {"type": "AverageValue", "averageValue": "700m"}  # 70% of one core
    assert metric["containerResource"] == {"name": "cpu", "container": "app", "target": target}
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 120
    pod = by_kind(prod, "Deployment")["catalog"]["spec"]["template"]["spec"]
    assert "app" in {c["name"] for c in pod["containers"]}


def test_keda_scales_consumers_on_their_lag_and_servers_on_calls_in_flight(
    prod: list[dict[str, Any]],
) -> None:
    scaled = by_kind(prod, "ScaledObject")
    assert set(scaled) == {"orders", "inventory"}
    for name, item in scaled.items():
        assert item["apiVersion"] == "keda.sh/v1alpha1"
        assert item["metadata"]["namespace"] == "shop"
        assert item["spec"]["scaleTargetRef"] == {"name": name}
        assert name in by_kind(prod, "Deployment")
    [lag] = scaled["inventory"]["spec"]["triggers"]
    assert lag["type"] == "nats-jetstream"
    assert lag["metadata"] == {
        "natsServerMonitoringEndpoint": "nats.shop.svc.cluster.local:8222",
        "account": "$G",
        "stream": EVENTS_STREAM,
        "consumer": "inventory",
        "lagThreshold": "100",
    }
    assert (
        scaled["inventory"]["spec"]["minReplicaCount"],
        scaled["inventory"]["spec"]["maxReplicaCount"],
    ) == (1, 3)
    [busy] = scaled["orders"]["spec"]["triggers"]
    assert busy["type"] == "prometheus"
    assert busy["metadata"]["serverAddress"] == PROMETHEUS_URL
    assert busy["metadata"]["threshold"] == "3"
    assert parse_errors([busy["metadata"]["query"]]) == []
    assert 'service="orders"' in busy["metadata"]["query"]
    monitor = {p["name"]: p["port"] for p in by_kind(prod, "Service")["nats"]["spec"]["ports"]}
    assert monitor["monitor"] == 8222


def test_autoscaled_deployments_leave_their_replicas_to_the_autoscaler(
    prod: list[dict[str, Any]], root: Path
) -> None:
    deployments = by_kind(prod, "Deployment")
    for name in SCALING:
        assert "replicas" not in deployments[name]["spec"], name
    assert deployments["payments"]["spec"]["replicas"] == 1
    dev = by_kind(kustomized(root / kube.DEV), "Deployment")
    assert {name: d["spec"]["replicas"] for name, d in dev.items() if name in SCALING} == {
        "catalog": 1, "orders": 1, "inventory": 1,
    }  # fmt: skip
    assert not by_kind(kustomized(root / kube.DEV), "ScaledObject")


def test_the_local_plan_places_every_replica_and_starts_min(tmp_path: Path) -> None:
    topology = autoscaled()
    plan = make_plan(topology, tmp_path)
    orders = [i.name for i in plan.of("orders")]
    assert orders == [f"orders-{n}" for n in range(5)]
    starting = {i.name for i in plan.running_at_start(topology)}
    assert starting >= {"orders-0", "orders-1", "catalog-0"}
    assert not starting & {"orders-2", "catalog-1"}
    assert plan.endpoints_dir == str(tmp_path.absolute() / "endpoints")
