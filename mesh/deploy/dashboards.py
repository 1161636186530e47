"""Grafana dashboards of the mesh, rendered from its topology, for Compose's Grafana
(provisioned files) and Kubernetes (ConfigMaps).

`dashboards(topology)` gives each dashboard's file name and its JSON model (Grafana 11.6,
built with Grafana's own `grafana-foundation-sdk`):

* `shop-services.json`, the golden signals of every service, from its apps' metrics
  (`mesh.runtime.metrics`): traffic, the share of server errors, latency (p50, p99), and
  saturation (calls refused at the admission limit, CPU and memory per instance); then a
  folded row per service, by method, and by version for a service that runs versions.
* `shop-saga.json`, the event path: events handled by consumer and outcome, dead letters,
  each consumer's lag, the producers' outboxes; a row per consuming service, naming the
  events it consumes.
* `shop-envoy.json`, what the sidecars do for their callers (Envoy's own statistics, by
  `envoy_cluster_name`): retries, outlier ejections, timeouts, circuit breakers; a row
  per call of `mesh.yaml`, its policy in the row's panels' descriptions.

Each dashboard reads the Prometheus data source its `datasource` variable names, and its
`service` variable selects services. The series carry the labels the scrape
configuration adds: `service` (the mesh's name of the service whose app or sidecar was
scraped), `instance`, and `version` where a service runs versions. The same topology
gives the same JSON: ids and uids come from names and places, nothing from the clock.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    VariableRefresh,
    VariableSort,
)

from mesh.control.envoy.stats import SERVER_ERRORS
from mesh.control.routing import cluster_name
from mesh.control.topology import CallPolicy, Service, Topology
from mesh.runtime.metrics import OUTBOX_DEGRADED_SECONDS

#: The gRPC status codes of server errors, by name: the set the sidecars' statistics count
#: as failed calls (`mesh.control.envoy.stats.SERVER_ERRORS`, by number).
SERVER_ERROR_CODES = tuple(
    code.name for code in grpc.StatusCode if str(code.value[0]) in SERVER_ERRORS
)

#: Every panel's and query's data source: the one the dashboard's `datasource` variable names.
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
#: The services the dashboard's `service` variable selects, as a label matcher.
SELECTED = 'service=~"$service"'
#: The window of every `rate`: Grafana's, at least four scrape intervals.
RATE = "$__rate_interval"
#: Panel widths: Grafana's grid is 24 columns wide.
HALF, THIRD = 12, 8
PANEL_HEIGHT = 8


#: A panel of a dashboard, as the SDK builds it.
Panel = timeseries.Panel | stat.Panel


@dataclass(frozen=True)
class Section:
    """A row of a dashboard: its title and its panels, laid out left to right and top to
    bottom; a `folded` row shows its panels only when opened."""

    title: str
    panels: Sequence[Panel]
    folded: bool = False


# -- PromQL --------------------------------------------------------------------------------


def matchers(*parts: str) -> str:
    """A selector's label matchers, `{a="b", c=~"d"}`, from the parts given."""
    return "{" + ", ".join(parts) + "}"


def rate(metric: str, selector: str, by: str) -> str:
    """The per-second rate of counter `metric`, summed by the labels `by`."""
    return f"sum by ({by}) (rate({metric}{selector}[{RATE}]))"


def one_of(values: Iterable[str]) -> str:
    """A regular expression matching any of `values` (Prometheus anchors it)."""
    return "|".join(values)


def server_error_share(selector_parts: Sequence[str], by: str) -> str:
    """The share of calls answered with a server error, by the labels `by`."""
    errors = matchers(*selector_parts, f'code=~"{one_of(SERVER_ERROR_CODES)}"')
    calls = matchers(*selector_parts)
    return (
        f"{rate('shop_rpc_requests_total', errors, by)}\n/\n"
        f"{rate('shop_rpc_requests_total', calls, by)}"
    )


def latency(quantile: float, selector: str, by: str) -> str:
    """The `quantile` of the apps' call durations, by the labels `by`."""
    buckets = rate("shop_rpc_duration_seconds_bucket", selector, f"{by}, le")
    return f"histogram_quantile({quantile:g}, {buckets})"


# -- panels --------------------------------------------------------------------------------


def query(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    """A Prometheus query of the dashboard's data source, its series named by `legend`."""
    return (
        prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)
    )


def graph(
    title: str, unit: str, queries: Sequence[prometheus.Dataquery], description: str, width: int
) -> timeseries.Panel:
    """A time series panel of `queries`, its legend a table of the last and highest value."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .min(0)
        .span(width)
        .height(PANEL_HEIGHT)
        .fill_opacity(10)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
        .tooltip(
            common_builders.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
    )
    for target in queries:
        panel.with_target(target)
    return panel


def total(title: str, query_: prometheus.Dataquery, description: str, width: int) -> stat.Panel:
    """A stat panel of one instant query over the dashboard's time range."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit("short")
        .span(width)
        .height(PANEL_HEIGHT)
        .graph_mode(common.BigValueGraphMode.NONE)
        .color_mode(common.BigValueColorMode.VALUE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .with_target(query_.instant())
    )


# -- the dashboards ------------------------------------------------------------------------


SERVICES_DESCRIPTION = (
    "The golden signals of every service, from its apps' metrics: traffic, server errors, "
    "latency and saturation."
)
SAGA_DESCRIPTION = (
    "The order saga's event path: events handled by each consumer, dead letters, each "
    "consumer's lag, and the outboxes of the services that publish events."
)
ENVOY_DESCRIPTION = (
    "What the sidecars do for their callers, from Envoy's statistics: retries, outlier "
    "ejections, timeouts and circuit breakers, by upstream cluster."
)


def dashboards(topology: Topology) -> dict[str, dict[str, Any]]:
    """Every dashboard of `topology`, by file name, as Grafana's JSON model."""
    return {
        "shop-services.json": render(
            "services", "Shop / Services", SERVICES_DESCRIPTION, services_sections(topology)
        ),
        "shop-saga.json": render("saga", "Shop / Saga", SAGA_DESCRIPTION, saga_sections(topology)),
        "shop-envoy.json": render(
            "envoy", "Shop / Envoy", ENVOY_DESCRIPTION, envoy_sections(topology)
        ),
    }


def render(name: str, title: str, description: str, sections: Sequence[Section]) -> dict[str, Any]:
    """The JSON model of dashboard `name`: its variables, then each section as a row of
    panels, every row and panel numbered in order from 1."""
    builder = (
        dashboard_builders.Dashboard(title)
        .uid(f"shop-{name}")
        .description(description)
        .tags(["shop", "generated"])
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .editable()
        .with_variable(datasource_variable())
        .with_variable(service_variable())
    )
    ids = itertools.count(1)
    for section in sections:
        row = dashboard_builders.Row(section.title).id(next(ids)).collapsed(section.folded)
        panels = [panel.id(next(ids)) for panel in section.panels]
        if section.folded:
            for panel in panels:
                row.with_panel(panel)
        builder.with_row(row)
        if not section.folded:
            for panel in panels:
                builder.with_panel(panel)
    encoded = JSONEncoder(sort_keys=True).encode(builder.build())
    model: dict[str, Any] = json.loads(encoded)
    return model


def datasource_variable() -> dashboard_builders.DatasourceVariable:
    """The Prometheus data source every panel reads, whatever Grafana names it."""
    return (
        dashboard_builders.DatasourceVariable("datasource").label("Data source").type("prometheus")
    )


def service_variable() -> dashboard_builders.QueryVariable:
    """The services shown: any of those whose apps report calls, all by default."""
    return (
        dashboard_builders.QueryVariable("service")
        .label("Service")
        .datasource(DATASOURCE)
        .query("label_values(shop_rpc_requests_total, service)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
    )


# -- shop-services.json --------------------------------------------------------------------


def services_sections(topology: Topology) -> list[Section]:
    """The golden signals of the selected services, then a row of each service's own, by
    method (and by version, for a service with versions), folded."""
    selected = matchers(SELECTED)
    by_service = "{{service}}"
    return [
        Section("Traffic", [
            graph("Calls per second", "reqps",
                  [query(rate("shop_rpc_requests_total", selected, "service"), by_service)],
                  "Calls the apps answered, by service.", HALF),
            graph("Calls per second by status", "reqps",
                  [query(rate("shop_rpc_requests_total", selected, "service, code"),
                         "{{service}} {{code}}")],
                  "Calls the apps answered, by service and gRPC status.", HALF),
        ]),
        Section("Errors and latency", [
            graph("Server errors", "percentunit",
                  [query(server_error_share([SELECTED], "service"), by_service)],
                  "The share of calls answered with a server error "
                  f"({', '.join(SERVER_ERROR_CODES)}), by service.", THIRD),
            graph("Latency p50", "s", [query(latency(0.5, selected, "service"), by_service)],
                  "Half the calls took the apps at most this long, by service.", THIRD),
            graph("Latency p99", "s", [query(latency(0.99, selected, "service"), by_service)],
                  "99% of the calls took the apps at most this long, by service.", THIRD),
        ]),
        Section("Saturation", saturation_panels(selected)),
        *(service_section(topology.services[name]) for name in sorted(topology.services)),
    ]  # fmt: skip


def saturation_panels(selected: str) -> list[Panel]:
    """Calls refused at the admission limit, and each instance's CPU and memory."""
    per_instance = "{{service}} {{instance}}"
    return [
        graph("Calls refused", "reqps",
              [query(rate("shop_rpc_refused_total", selected, "service"), "{{service}}")],
              "Calls an app refused unstarted, at its limit of calls in flight "
              "(admission in mesh.yaml): the service needs more replicas or more CPU.",
              THIRD),
        graph("CPU per instance", "short",
              [query(rate("process_cpu_seconds_total", selected, "service, instance"),
                     per_instance)],
              "CPU seconds each app used per second (1 is one core).", THIRD),
        graph("Memory per instance", "bytes",
              [query(f"sum by (service, instance) (process_resident_memory_bytes{selected})",
                     per_instance)],
              "Each app's resident memory.", THIRD),
    ]  # fmt: skip


def service_section(service: Service) -> Section:
    """`service`'s calls by method: traffic, server errors, p99 latency, refusals; and
    by version when it runs versions."""
    name, own = service.name, f'service="{service.name}"'
    by_method = "{{method}}"
    admits = service.admission
    panels: list[Panel] = [
        graph(f"{name}: calls per second by method", "reqps",
              [query(rate("shop_rpc_requests_total", matchers(own), "method"), by_method)],
              f"Calls {name}'s {replicas(service)} answered, by method.", HALF),
        graph(f"{name}: server errors by method", "percentunit",
              [query(server_error_share([own], "method"), by_method)],
              "The share of each method's calls answered with a server error.", HALF),
        graph(f"{name}: latency p99 by method", "s",
              [query(latency(0.99, matchers(own), "method"), by_method)],
              "99% of each method's calls took the apps at most this long.", HALF),
        graph(f"{name}: calls refused by method", "reqps",
              [query(rate("shop_rpc_refused_total", matchers(own), "method"), by_method)],
              f"Calls refused unstarted: each app of {name} admits {admits.max_in_flight} "
              f"calls at once, {admits.expensive_in_flight} of them to expensive methods.",
              HALF),
    ]  # fmt: skip
    if service.versions:
        panels += version_panels(service)
    return Section(f"{name} ({replicas(service)})", panels, folded=True)


def replicas(service: Service) -> str:
    """How many replicas `service` runs, in words: "1 replica", "3 replicas"."""
    return f"{service.replicas} replica{'' if service.replicas == 1 else 's'}"


def version_panels(service: Service) -> list[Panel]:
    """The golden signals of each version of `service`, side by side."""
    name, own = service.name, f'service="{service.name}"'
    by_version = "{{version}}"
    return [
        graph(f"{name}: calls per second by version", "reqps",
              [query(rate("shop_rpc_requests_total", matchers(own), "version"), by_version)],
              f"Calls each version of {name} answered.", THIRD),
        graph(f"{name}: server errors by version", "percentunit",
              [query(server_error_share([own], "version"), by_version)],
              "The share of each version's calls answered with a server error.", THIRD),
        graph(f"{name}: latency p99 by version", "s",
              [query(latency(0.99, matchers(own), "version"), by_version)],
              "99% of each version's calls took the apps at most this long.", THIRD),
    ]  # fmt: skip


# -- shop-saga.json ------------------------------------------------------------------------


def saga_sections(topology: Topology) -> list[Section]:
    """The event path of the selected services; a row per consuming service."""
    services = [topology.services[name] for name in sorted(topology.services)]
    consumers = [service for service in services if service.consumes]
    producers = sorted({event.split(".", 1)[0] for s in consumers for event in s.consumes})
    return [
        Section("Events", event_panels()),
        Section(f"Outboxes ({', '.join(producers)})", outbox_panels(producers)),
        *(consumer_section(service) for service in consumers),
    ]


def event_panels() -> list[Panel]:
    """Events handled by each consumer, its lag, and its dead letters."""
    selected = matchers(SELECTED)
    dead = matchers(SELECTED, 'outcome="dead"')
    return [
        graph("Events handled per second", "ops",
              [query(rate("shop_events_total", selected, "consumer, outcome"),
                     "{{consumer}} {{outcome}}")],
              "Events each consumer handled, by outcome: applied, duplicate (already "
              "applied), failed (each failed try), retried, dead (set aside).", THIRD),
        graph("Consumer lag", "short",
              [query(f"max by (consumer) (shop_consumer_pending{selected})", "{{consumer}}")],
              "Events JetStream holds for each consumer, not yet delivered.", THIRD),
        total("Dead letters",
              query(f"sum by (consumer) (increase(shop_events_total{dead}[$__range]))",
                    "{{consumer}}"),
              "Events each consumer set aside as dead letters in the time range "
              "(`meshctl dlq list`).", THIRD),
    ]  # fmt: skip


def outbox_panels(producers: Sequence[str]) -> list[Panel]:
    """The outboxes of the services that publish events: waiting, oldest, parked."""
    selected = matchers(SELECTED, f'service=~"{one_of(producers)}"')
    by_service = "{{service}}"
    return [
        graph("Events waiting in the outbox", "short",
              [query(f"max by (service) (shop_outbox_pending{selected})", by_service)],
              "Events committed and not yet published, by service.", THIRD),
        graph("Oldest event waiting", "s",
              [query(f"max by (service) (shop_outbox_oldest_pending_seconds{selected})",
                     by_service)],
              "How long the oldest unpublished event has waited; past "
              f"{OUTBOX_DEGRADED_SECONDS:g} s its service is DEGRADED.", THIRD),
        total("Events parked",
              query(f"sum by (service) (increase(shop_outbox_parked_total{selected}[$__range]))",
                    by_service),
              "Events the bus would not take, parked in the outbox in the time range.", THIRD),
    ]  # fmt: skip


def consumer_section(service: Service) -> Section:
    """What `service`'s consumer handles, and how far behind it is."""
    own = matchers(f'consumer="{service.name}"')
    events = ", ".join(service.consumes)
    return Section(f"{service.name} consumes {len(service.consumes)} events", [
        graph(f"{service.name}: events handled per second", "ops",
              [query(rate("shop_events_total", own, "outcome"), "{{outcome}}")],
              f"Events {service.name}'s consumer handled, by outcome; it consumes {events}.",
              HALF),
        graph(f"{service.name}: lag", "short",
              [query(f"max by (consumer) (shop_consumer_pending{own})", "{{consumer}}")],
              f"Events JetStream holds for {service.name}, not yet delivered.", HALF),
    ])  # fmt: skip


# -- shop-envoy.json -----------------------------------------------------------------------

#: The sidecar of a caller and the cluster of a callee, in a legend.
LINK = "{{service}} → {{envoy_cluster_name}}"


def envoy_sections(topology: Topology) -> list[Section]:
    """The sidecars of the selected services; a row per call of mesh.yaml."""
    selected = matchers(SELECTED)
    by_link = "service, envoy_cluster_name"
    calls = [
        (caller, callee, policy)
        for caller in sorted(topology.services)
        for callee, policy in sorted(topology.services[caller].calls.items())
    ]
    return [
        Section("Retries", [
            graph("Retries per second", "reqps",
                  [query(rate("envoy_cluster_upstream_rq_retry", selected, by_link), LINK)],
                  "Tries a sidecar sent again, by caller and upstream cluster.", HALF),
            graph("Retries refused per second", "reqps",
                  [query(rate("envoy_cluster_upstream_rq_retry_overflow", selected, by_link),
                         f"{LINK} over budget"),
                   query(rate("envoy_cluster_upstream_rq_retry_limit_exceeded", selected,
                              by_link), f"{LINK} out of retries", "B")],
                  "Retries the retry budget refused, and calls that failed with every "
                  "retry spent.", HALF),
        ]),
        Section("Outlier detection", [
            graph("Replicas ejected", "short",
                  [query(f"sum by ({by_link}) "
                         f"(envoy_cluster_outlier_detection_ejections_active{selected})", LINK)],
                  "Replicas a sidecar keeps out of balancing for failing, now.", HALF),
            graph("Ejections per second", "ops",
                  [query(rate("envoy_cluster_outlier_detection_ejections_enforced_total",
                              selected, by_link), LINK)],
                  "Replicas ejected, by caller and upstream cluster.", HALF),
        ]),
        Section("Timeouts and circuit breakers", limit_panels(selected, by_link)),
        *(call_section(topology, caller, callee, policy) for caller, callee, policy in calls),
    ]  # fmt: skip


def limit_panels(selected: str, by_link: str) -> list[Panel]:
    """Calls that timed out, circuit breakers open, and calls they turned away."""
    open_ = [("rq", "requests"), ("rq_pending", "pending"), ("cx", "connections"),
             ("rq_retry", "retries")]  # fmt: skip
    return [
        graph("Timeouts per second", "reqps",
              [query(rate("envoy_cluster_upstream_rq_timeout", selected, by_link),
                     f"{LINK} call"),
               query(rate("envoy_cluster_upstream_rq_per_try_timeout", selected, by_link),
                     f"{LINK} try", "B")],
              "Calls that ran out of their timeout, and tries out of their per-try timeout.",
              THIRD),
        graph("Circuit breakers open", "short",
              [query(f"max by ({by_link}) "
                     f"(envoy_cluster_circuit_breakers_default_{kind}_open{selected})",
                     f"{LINK} {name}", ref)
               for (kind, name), ref in zip(open_, "ABCD", strict=True)],
              "1 while a circuit breaker of the cluster is at its limit.", THIRD),
        graph("Calls turned away per second", "reqps",
              [query(rate("envoy_cluster_upstream_rq_pending_overflow", selected, by_link),
                     f"{LINK} pending"),
               query(rate("envoy_cluster_upstream_rq_active_overflow", selected, by_link),
                     f"{LINK} active", "B")],
              "Calls a circuit breaker refused at once (503, UO).", THIRD),
    ]  # fmt: skip


def call_section(topology: Topology, caller: str, callee: str, policy: CallPolicy) -> Section:
    """One call of mesh.yaml: the retries, ejections and timeouts of the caller's sidecar
    towards the callee's clusters, the call's policy in each panel's description."""
    clusters = one_of(cluster_name(callee, r.name) for r in topology.services[callee].releases)
    own = matchers(f'service="{caller}"', f'envoy_cluster_name=~"{clusters}"')
    by = "envoy_cluster_name"
    cluster = "{{envoy_cluster_name}}"
    retries, outliers = policy.retries, policy.outlier_detection
    return Section(f"{caller} → {callee}", [
        graph(f"{caller} → {callee}: retries", "reqps",
              [query(rate("envoy_cluster_upstream_rq_retry", own, by), f"{cluster} retried"),
               query(rate("envoy_cluster_upstream_rq_retry_success", own, by),
                     f"{cluster} succeeded", "B"),
               query(rate("envoy_cluster_upstream_rq_retry_overflow", own, by),
                     f"{cluster} over budget", "C")],
              f"Up to {retries.attempts} retries after the first try, each try "
              f"{retries.per_try_timeout:g} s at most; retries at most "
              f"{retries.budget_percent:g}% of the calls in flight (always "
              f"{retries.min_retry_concurrency}).", THIRD),
        graph(f"{caller} → {callee}: replicas ejected", "short",
              [query(f"sum by ({by}) (envoy_cluster_outlier_detection_ejections_active{own})",
                     cluster)],
              f"A replica of {callee} is ejected after {outliers.consecutive_5xx} server "
              f"errors or {outliers.consecutive_gateway_failure} gateway failures in a row, "
              f"for {outliers.base_ejection_time:g} s or more, at most "
              f"{outliers.max_ejection_percent}% of them at once.", THIRD),
        graph(f"{caller} → {callee}: timeouts and turned away", "reqps",
              [query(rate("envoy_cluster_upstream_rq_timeout", own, by), f"{cluster} call"),
               query(rate("envoy_cluster_upstream_rq_per_try_timeout", own, by),
                     f"{cluster} try", "B"),
               query(rate("envoy_cluster_upstream_rq_pending_overflow", own, by),
                     f"{cluster} turned away", "C")],
              f"Calls out of their {policy.timeout:g} s, tries out of their "
              f"{retries.per_try_timeout:g} s, and calls the circuit breaker refused.", THIRD),
    ])  # fmt: skip
