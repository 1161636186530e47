"""What Prometheus and Grafana need to watch a deployed mesh: whom to scrape, the alert
rules, and the dashboards (`mesh.deploy.dashboards`) with their data source.

Every instance's sidecar serves, on its probe port, its app's metrics (`/metrics`) and
its own statistics (`/stats/prometheus`): two scrape jobs (`rules.APPS_JOB`,
`rules.SIDECARS_JOB`), whose every series carries `service`, `instance` and, for a
service with versions, `version`, which the rules and the dashboards group by.

Compose gets a Prometheus configuration with a static target per instance container,
and Grafana's provisioning (the data source, the dashboards' folder); Kubernetes gets a
Prometheus Operator `PodMonitor` that relabels the pods' labels into the same names, the
rules as a `PrometheusRule`, and the dashboards in a ConfigMap labelled for Grafana's
dashboard sidecar (`grafana_dashboard: "1"`, as the Grafana Helm chart watches).
"""

from __future__ import annotations

import json
from typing import Any

from mesh.control.alerting.prometheus import rule_groups
from mesh.control.alerting.rules import APPS_JOB, SIDECARS_JOB
from mesh.control.plan import MeshPlan
from mesh.control.topology import Topology
from mesh.deploy import containers
from mesh.deploy.dashboards import dashboards

#: The paths of the two jobs on an instance's probe port.
JOB_PATHS = {APPS_JOB: "/metrics", SIDECARS_JOB: "/stats/prometheus"}
SCRAPE_INTERVAL = "15s"
#: Where Compose's Prometheus reads its configuration and rules.
PROMETHEUS_CONFIG_DIR = "/etc/prometheus"
RULES_FILE = "rules.yml"
#: Where Compose's Grafana reads its provisioning and the dashboards.
GRAFANA_PROVISIONING_DIR = "/etc/grafana/provisioning"
GRAFANA_DASHBOARDS_DIR = "/var/lib/grafana/dashboards"
#: The label Grafana's dashboard sidecar finds dashboards' ConfigMaps by.
DASHBOARD_LABEL = {"grafana_dashboard": "1"}


def _target_labels(service: str, instance: str, version: str) -> dict[str, str]:
    labels = {"service": service, "instance": instance}
    if version:
        labels["version"] = version
    return labels


def compose_config(plan: MeshPlan) -> dict[str, Any]:
    """Compose's `prometheus.yml`: each instance container's probe port, in both jobs."""
    targets = [
        {
            "targets": [f"{i.name}:{containers.PROBE_PORT}"],
            "labels": _target_labels(i.service, i.name, i.version),
        }
        for i in plan.instances
    ]
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [f"{PROMETHEUS_CONFIG_DIR}/{RULES_FILE}"],
        "scrape_configs": [
            {"job_name": job, "metrics_path": path, "static_configs": targets}
            for job, path in JOB_PATHS.items()
        ],
    }


def compose_rules(topology: Topology) -> dict[str, Any]:
    return rule_groups(topology)


def pod_monitor(namespace: str, service_component: str) -> dict[str, Any]:
    """The Prometheus Operator's `PodMonitor` of every service pod, in both jobs."""
    relabel = [
        _copy_label("app_kubernetes_io_name", "service"),
        _copy_label("version", "version"),
        {"sourceLabels": ["__meta_kubernetes_pod_name"], "targetLabel": "instance"},
    ]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "shop-services", "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/component": service_component}},
            "podMetricsEndpoints": [
                {
                    "port": "probe",
                    "path": path,
                    "interval": SCRAPE_INTERVAL,
                    "relabelings": [{"targetLabel": "job", "replacement": job}, *relabel],
                }
                for job, path in JOB_PATHS.items()
            ],
        },
    }


def _copy_label(pod_label: str, target: str) -> dict[str, Any]:
    return {"sourceLabels": [f"__meta_kubernetes_pod_label_{pod_label}"], "targetLabel": target}


def prometheus_rule(topology: Topology) -> dict[str, Any]:
    """The rules as the Prometheus Operator's `PrometheusRule`."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "shop-alerts", "namespace": topology.namespace},
        "spec": rule_groups(topology),
    }


def dashboard_files(topology: Topology) -> dict[str, str]:
    """Each dashboard's file name and JSON text (stable: keys sorted)."""
    return {
        name: json.dumps(model, indent=2, sort_keys=True) + "\n"
        for name, model in sorted(dashboards(topology).items())
    }


def grafana_datasource(prometheus_url: str) -> dict[str, Any]:
    """Grafana's provisioned data source: the Prometheus at `prometheus_url`."""
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus",
                "uid": "prometheus",
                "type": "prometheus",
                "access": "proxy",
                "url": prometheus_url,
                "isDefault": True,
            }
        ],
    }


def grafana_dashboards_provider() -> dict[str, Any]:
    """Grafana's provisioned dashboards: every file in `GRAFANA_DASHBOARDS_DIR`."""
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "shop",
                "folder": "Shop",
                "type": "file",
                "disableDeletion": True,
                "options": {"path": GRAFANA_DASHBOARDS_DIR},
            }
        ],
    }
