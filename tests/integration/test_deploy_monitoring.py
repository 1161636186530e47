"""The committed monitoring of the deployments: Compose's Prometheus scrapes every
instance in both jobs and loads the alert rules; Kubernetes' PodMonitor selects every
service pod on its sidecar's probe port, and its PrometheusRule carries the same rules
with the Kubernetes-only alerts. Rules are checked as Prometheus loads them, with every
expression parsed by a real PromQL parser; the Prometheus Operator's kinds (CRDs, which
the Kubernetes schemas do not know) field by field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.control.alerting.rules import APPS_JOB, SIDECARS_JOB
from mesh.deploy import compose, containers, kube, monitoring
from tests.support.deploy import (
    ROOT,
    by_kind,
    documents,
    kustomized,
    repository_topology,
    unknown_to_schemas,
)
from tests.support.prometheus_rules import rule_file_errors

pytestmark = pytest.mark.integration

PROMETHEUS_DIR = ROOT / compose.PROMETHEUS_FILES_DIR


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_compose_prometheus_scrapes_every_instance_in_both_jobs() -> None:
    config = _yaml(PROMETHEUS_DIR / "prometheus.yml")
    plan = compose.instances_plan(repository_topology())
    expected = {(f"{i.name}:{containers.PROBE_PORT}", i.service, i.name) for i in plan.instances}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {APPS_JOB, SIDECARS_JOB}
    assert jobs[APPS_JOB]["metrics_path"] == "/metrics"
    assert jobs[SIDECARS_JOB]["metrics_path"] == "/stats/prometheus"
    for job in jobs.values():
        found = {
            (target, entry["labels"]["service"], entry["labels"]["instance"])
            for entry in job["static_configs"]
            for target in entry["targets"]
        }
        assert found == expected
    [rules] = config["rule_files"]
    assert rules == f"{monitoring.PROMETHEUS_CONFIG_DIR}/{monitoring.RULES_FILE}"


def test_compose_prometheus_mounts_its_files_and_its_rules_load() -> None:
    service = _yaml(ROOT / compose.COMPOSE_FILE)["services"][compose.PROMETHEUS_HOST]
    mount = f"./{compose.PROMETHEUS_FILES_DIR}:{monitoring.PROMETHEUS_CONFIG_DIR}:ro"
    assert mount in service["volumes"]
    document = _yaml(PROMETHEUS_DIR / monitoring.RULES_FILE)
    assert rule_file_errors(document) == []
    alerts = {r["alert"] for g in document["groups"] for r in g["rules"] if "alert" in r}
    assert "AvailabilityBudgetBurn" in alerts
    assert "CertificateExpiring" in alerts  # from the sidecars' own gauges, as in Kubernetes


def test_a_rule_file_prometheus_would_refuse_is_refused() -> None:
    broken = {
        "groups": [
            {"name": "g", "rules": [{"record": "a-b", "expr": "up"}]},
            {"name": "g", "rules": [{"alert": "X", "expr": "up ==", "for": "1 minute"}]},
        ]
    }
    errors = rule_file_errors(broken)
    assert any("repeat" in e for e in errors)
    assert any("'a-b' is not a metric name" in e for e in errors)
    assert any("not a duration" in e for e in errors)
    assert any("up ==" in e for e in errors)


def _monitoring_objects() -> list[dict[str, Any]]:
    return kustomized(ROOT / kube.MONITORING)


def test_kubernetes_podmonitor_selects_every_service_pod_on_its_probe_port() -> None:
    [monitor] = by_kind(_monitoring_objects(), "PodMonitor").values()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == "shop"
    selector = monitor["spec"]["selector"]["matchLabels"]
    endpoints = monitor["spec"]["podMetricsEndpoints"]
    assert {e["path"] for e in endpoints} == {"/metrics", "/stats/prometheus"}
    base = kustomized(ROOT / kube.BASE)
    deployments = by_kind(base, "Deployment")
    services = set(repository_topology().services)
    selected = set()
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]
        if selector.items() <= pod["metadata"]["labels"].items():
            selected.add(pod["metadata"]["labels"]["app.kubernetes.io/name"])
            sidecars = pod["spec"]["initContainers"]
            ports = {p["name"] for c in sidecars for p in c.get("ports", [])}
            assert all(e["port"] in ports for e in endpoints), name
    assert selected == services
    for endpoint in endpoints:
        targets = {r["targetLabel"] for r in endpoint["relabelings"]}
        assert {"job", "service", "instance", "version"} <= targets


def test_kubernetes_prometheusrule_carries_rules_prometheus_loads() -> None:
    [rule] = by_kind(_monitoring_objects(), "PrometheusRule").values()
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule["spec"]) == {"groups"}
    assert rule_file_errors(rule["spec"]) == []
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert {"AvailabilityBudgetBurn", "LatencyBudgetBurn", "CertificateExpiring"} <= alerts


def test_the_base_needs_no_operator() -> None:
    kinds = {item["kind"] for item in documents((ROOT / kube.BASE / "catalog.yaml").read_text())}
    assert "PodMonitor" not in kinds
    assert "PrometheusRule" not in kinds
    base = yaml.safe_load((ROOT / kube.BASE / "kustomization.yaml").read_text())
    assert not any("monitoring" in resource for resource in base["resources"])


def test_compose_grafana_reads_prometheus_and_every_dashboard() -> None:
    services = _yaml(ROOT / compose.COMPOSE_FILE)["services"]
    grafana = services[compose.GRAFANA_HOST]
    assert grafana["depends_on"] == {compose.PROMETHEUS_HOST: {"condition": "service_healthy"}}
    provisioning = ROOT / compose.GRAFANA_FILES_DIR / "provisioning"
    [source] = _yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    [provider] = _yaml(provisioning / "dashboards" / "shop.yml")["providers"]
    assert provider["options"]["path"] == monitoring.GRAFANA_DASHBOARDS_DIR
    mounted = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    boards = ROOT / mounted[monitoring.GRAFANA_DASHBOARDS_DIR]
    expected = monitoring.dashboard_files(repository_topology())
    assert {p.name: p.read_text() for p in boards.iterdir()} == expected
    assert (ROOT / mounted[monitoring.GRAFANA_PROVISIONING_DIR]) == provisioning


def test_kubernetes_dashboards_are_a_configmap_grafanas_sidecar_finds() -> None:
    [board] = by_kind(_monitoring_objects(), "ConfigMap").values()
    assert monitoring.DASHBOARD_LABEL.items() <= board["metadata"]["labels"].items()
    assert board["data"] == monitoring.dashboard_files(repository_topology())
    assert unknown_to_schemas([board]) == []
