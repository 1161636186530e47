"""A service's versions: read from mesh.yaml, laid out as instances, rendered as Envoy
clusters and weighted routes with pinned copies, and the split written as Envoy runtime."""

from __future__ import annotations

import re
from pathlib import Path
from textwrap import dedent

import pytest

from mesh.control import routing
from mesh.control.api import Api, Idempotency, Method
from mesh.control.envoy import splits
from mesh.control.envoy.clusters import dependency_clusters
from mesh.control.envoy.routes import inbound_routes, outbound_routes
from mesh.control.envoy.tls import SdsFiles
from mesh.control.plan import make_plan
from mesh.control.topology import Faults, parse
from tests.support.topology import parse_error

VERSIONED = dedent(
    """\
    services:
      catalog:
        replicas: 2
        faults: {delay: {percent: 1, duration: 10ms}}
        versions:
          v1: {weight: 90}
          v2:
            replicas: 1
            weight: 10
            env: {CATALOG_MODE: "fast"}
            module: services.catalog_next
            faults: {abort: {percent: 20}}
      orders:
        calls: {catalog: {methods: [GetProduct]}}
    """
)
API = Api(
    {
        "catalog": (
            Method(
                "/shop.catalog.v1.CatalogService/GetProduct", Idempotency.NO_SIDE_EFFECTS, False
            ),
        )
    }
)
SDS = SdsFiles(Path("i.yaml"), Path("i"), Path("t.yaml"), Path("t"))


def test_versions_keep_their_own_replicas_settings_and_weights() -> None:
    catalog = parse(VERSIONED).services["catalog"]
    v1, v2 = catalog.versions
    assert (v1.name, v1.replicas, v1.weight, v1.module) == ("v1", 2, 90, None)
    assert v1.faults == Faults(delay_percent=1.0, delay=0.01)  # the service's
    assert (v2.replicas, v2.weight, dict(v2.env), v2.module) == (
        1, 10, {"CATALOG_MODE": "fast"}, "services.catalog_next"
    )  # fmt: skip
    assert v2.faults == Faults(abort_percent=20.0)
    assert catalog.replicas == 3
    assert catalog.releases == catalog.versions


def test_without_weights_the_first_version_takes_every_call() -> None:
    text = "services:\n  catalog:\n    versions: {v1: {}, v2: {}}\n"
    assert [v.weight for v in parse(text).services["catalog"].versions] == [100, 0]


def test_a_service_without_versions_runs_one_release_named_after_it() -> None:
    [release] = parse("services:\n  catalog: {replicas: 2}\n").services["catalog"].releases
    assert (release.name, release.replicas, release.weight) == ("", 2, 100)


@pytest.mark.parametrize(
    ("versions", "expected"),
    [
        ("{v1: {weight: 90}, v2: {weight: 20}}", "the weights add up to 110 (v1 90, v2 20)"),
        ("{V2: {}}", "'V2' is not a version name"),
        ("{v1: {weight: 101}}", "weight must be between 0 and 100"),
        ("{v1: {env: {lower: x}}}", "'lower' is not an environment variable name"),
        ("{v1: {env: {A: 1}}}", "must be a string"),
        ("{v1: {module: 'not a module'}}", "is not a Python module name"),
        ("{v1: {replica: 2}}", "unknown key 'replica'"),
        ("{}", "names no version"),
    ],
)
def test_a_mistake_in_versions_names_its_line(versions: str, expected: str) -> None:
    error = parse_error(f"services:\n  catalog:\n    versions: {versions}\n")
    assert expected in error.detail
    assert error.line == 3


def test_versions_cannot_fix_ports() -> None:
    error = parse_error(
        "services:\n  catalog:\n    ports: {app: 7000}\n    versions: {v1: {}, v2: {}}\n"
    )
    assert "cannot fix its ports" in error.detail


def test_each_version_runs_its_own_instances() -> None:
    plan = make_plan(parse(VERSIONED), Path("/tmp/run"))
    names = [i.name for i in plan.of("catalog")]
    assert names == ["catalog-v1-0", "catalog-v1-1", "catalog-v2-0"]
    assert plan.instance("catalog-v2-0").admin_socket.endswith("/envoy/catalog-v2-0.sock")
    assert len(plan.endpoints_of("catalog", "v1")) == 2
    assert len(plan.endpoints_of("catalog", "v2")) == 1
    assert [i.name for i in plan.of("orders")] == ["orders-0"]


def test_a_caller_reaches_each_version_as_a_cluster_of_its_own() -> None:
    topology = parse(VERSIONED)
    plan = make_plan(topology, Path("/tmp/run"))
    clusters = dependency_clusters(
        topology, plan, "catalog", topology.services["orders"].calls["catalog"], SDS
    )
    assert [c["name"] for c in clusters] == ["catalog_v1", "catalog_v2"]
    endpoints = [c["load_assignment"]["endpoints"][0]["lb_endpoints"] for c in clusters]
    assert [len(e) for e in endpoints] == [2, 1]
    # Each version's circuit breaker admits what its own replicas admit.
    limits = [c["circuit_breakers"]["thresholds"][0]["max_requests"] for c in clusters]
    assert limits == [64, 32]


def test_routes_split_by_runtime_weight_after_copies_pinned_by_header() -> None:
    topology = parse(VERSIONED)
    routes = outbound_routes(topology, "catalog", topology.services["orders"].calls["catalog"], API)
    pinned, split = routes[:4], routes[4:]
    weighted = split[0]["route"]["weighted_clusters"]
    assert weighted["runtime_key_prefix"] == "routing"
    assert weighted["clusters"] == [
        {"name": "catalog_v1", "weight": 90},
        {"name": "catalog_v2", "weight": 10},
    ]
    headers = [
        (r["match"]["headers"][0]["string_match"]["exact"], r["route"]["cluster"]) for r in pinned
    ]
    assert headers == [("v1", "catalog_v1"), ("v2", "catalog_v2")] * 2
    assert pinned[0]["match"]["path"] == split[0]["match"]["path"]
    assert pinned[0]["route"]["retry_policy"] == split[0]["route"]["retry_policy"]
    assert "headers" not in split[0]["match"]


def test_the_edge_also_pins_by_cookie() -> None:
    topology = parse(VERSIONED)
    route = {"match": {"path": "/x"}, "route": splits.target(topology, "catalog")}
    routes = splits.with_pins(topology, [route], cookie=True)
    pins = [r["match"]["headers"][0] for r in routes[:-1]]
    assert [pin["name"] for pin in pins] == ["x-shop-version"] * 2 + ["cookie"] * 2
    pattern = pins[3]["string_match"]["safe_regex"]["regex"]  # v2's; Envoy matches whole
    assert re.fullmatch(pattern, "a=1; shop-version=v2; b=2")
    assert re.fullmatch(pattern, "shop-version=v2")
    assert not re.fullmatch(pattern, "shop-version=v20")
    assert not re.fullmatch(pattern, "myshop-version=v2")


def test_a_service_without_versions_keeps_one_cluster_and_no_pins() -> None:
    topology = parse("services:\n  catalog: {}\n  orders:\n    calls: {catalog: {methods: all}}\n")
    routes = outbound_routes(topology, "catalog", topology.services["orders"].calls["catalog"], API)
    assert [r["route"]["cluster"] for r in routes] == ["catalog", "catalog"]
    assert splits.runtime(topology, "/x", ["catalog"]) == {}
    versioned = parse(VERSIONED)
    assert splits.runtime(versioned, "/x", ["orders"]) == {}
    [layer] = splits.runtime(versioned, "/x", ["catalog"])["layered_runtime"]["layers"]
    assert layer["disk_layer"]["symlink_root"] == "/x"


def test_a_version_says_it_answered() -> None:
    topology = parse(VERSIONED)
    plan = make_plan(topology, Path("/tmp/run"))
    [route, *_] = inbound_routes(topology, API, plan.instance("catalog-v2-0"))
    assert route["response_headers_to_add"][0]["header"] == {"key": "x-shop-version", "value": "v2"}
    [plain, *_] = inbound_routes(topology, API, plan.instance("orders-0"))
    assert "response_headers_to_add" not in plain


def test_a_split_is_a_runtime_layer_swapped_in_whole(tmp_path: Path) -> None:
    topology = parse(VERSIONED)
    with routing.changing(tmp_path):
        first = routing.write_weights(tmp_path, routing.initial_weights(topology))
    root = routing.routing_root(tmp_path)
    assert root.resolve() == first.resolve()
    assert (root / "routing.catalog_v2").read_text() == "10\n"
    for share in range(4):
        with routing.changing(tmp_path):
            routing.write_weights(tmp_path, {"catalog": {"v1": 100 - share, "v2": share}})
    assert routing.read_weights(root) == {"catalog": {"v1": 97, "v2": 3}}
    layers = list((tmp_path / "routing" / "layers").iterdir())
    assert len(layers) == 1 + routing.KEPT_LAYERS


@pytest.mark.parametrize(
    ("shares", "expected"),
    [
        ({"catalog": {"v1": 50, "v2": 40}}, "add up to 90"),
        ({"catalog": {"v3": 100}}, "catalog has no version v3"),
        ({"orders": {"v1": 100}}, "'orders' has no versions"),
    ],
)
def test_a_split_that_does_not_fit_is_refused(
    shares: dict[str, dict[str, int]], expected: str
) -> None:
    with pytest.raises(routing.WeightsError, match=expected):
        routing.checked(parse(VERSIONED), shares)


def test_a_version_left_out_of_a_split_gets_nothing() -> None:
    found = routing.checked(parse(VERSIONED), {"catalog": {"v2": 100}})
    assert found == {"catalog": {"v1": 0, "v2": 100}}
