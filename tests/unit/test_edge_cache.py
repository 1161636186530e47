"""The edge's response cache without a running mesh: `edge.cache` in mesh.yaml and its
mistakes at their lines, the front chain with the 304 check and the cache, the matcher
that keeps credentials, pinned versions and other URLs away from it, the internal listener
it fetches through (validated by the real Envoy), and the runtime's validators."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import grpc
import pytest

from mesh.control import conformance, envoy
from mesh.control.api import Api
from mesh.control.contracts import DESCRIPTOR_SET, Workspace
from mesh.control.envoy import edge, edge_cache, edge_filters, matchers
from mesh.control.envoy.bootstrap import write_config
from mesh.control.pki import MeshPKI
from mesh.control.plan import make_plan
from mesh.control.topology import Topology, parse
from mesh.runtime import cacheable
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from tests.support.envoy_validation import refusal
from tests.support.topology import parse_error

ROOT = Workspace.find(Path(__file__).parent).root
MESH = """\
services:
  identity: {}
  inventory: {}
  catalog:
    calls: {inventory: {methods: [SetStock]}}
edge:
  port: 8080
  expose: [identity, inventory, catalog]
  auth:
    public: [identity.GetJwks, inventory.GetStock, catalog.GetProduct, catalog.ListProducts]
"""
GET_PRODUCT = "/shop.catalog.v1.CatalogService/GetProduct"
GET_PRODUCT_V2 = "/shop.catalog.v2.CatalogService/GetProduct"


def with_edge(*lines: str) -> Topology:
    return parse(MESH + "".join(f"  {line}\n" for line in lines))


CACHED = ("cache: {catalog.GetProduct: 10s, catalog.ListProducts: 2s}",)


@pytest.fixture(scope="module")
def api() -> Api:
    return Api.from_descriptor_set(ROOT / DESCRIPTOR_SET)


# -- mesh.yaml -----------------------------------------------------------------------------


def test_edge_cache_names_methods_and_their_max_age_in_whole_seconds() -> None:
    assert with_edge().edge.cache == {}
    topology = with_edge("cache:", "  catalog.GetProduct: 10s", "  catalog.ListProducts: 1m")
    assert topology.edge.cache == {"catalog.GetProduct": 10.0, "catalog.ListProducts": 60.0}
    assert topology.edge.cache_lines == {"catalog.GetProduct": 12, "catalog.ListProducts": 13}


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("GetProduct: 10s", "edge.cache key 'GetProduct' must name a method as <service>.<Method>"),
        ("catalog.GetProduct: 10", "edge.cache.catalog.GetProduct must be a duration"),
        ("catalog.GetProduct: 1500ms", "must be whole seconds from 1s to 24h"),
        ("catalog.GetProduct: 0s", "edge.cache.catalog.GetProduct must be longer than zero"),
        ("catalog.GetProduct: 2w", "is not a duration"),
        ("catalog.GetProduct: 2d", "must be whole seconds from 1s to 24h"),
        ("catalog.GetProduct: 25h", "must be whole seconds from 1s to 24h"),
    ],
)
def test_mistakes_in_edge_cache_are_told_at_their_line(entry: str, expected: str) -> None:
    error = parse_error(MESH + f"  cache:\n    {entry}\n")
    assert error.line == 12
    assert expected in error.detail


def test_unknown_keys_beside_cache_are_still_refused() -> None:
    assert "unknown key 'caches' in edge" in parse_error(MESH + "  caches: {}\n").detail


def test_only_public_methods_with_a_get_binding_may_be_cached(api: Api) -> None:
    topology = with_edge(
        "cache:",
        "  catalog.GetProduct: 5s",
        "  catalog.GetProdut: 5s",
        "  inventory.SetStock: 5s",
    )
    found = [(problem.line, problem.detail) for problem in conformance.problems(topology, api)]
    assert found == [
        (13, "edge.cache catalog.GetProdut: only a public method's answer may be shared: add "
             "it to edge.auth.public or drop it here; did you mean 'catalog.GetProduct'?"),
        (14, "edge.cache inventory.SetStock: only a public method's answer may be shared: add "
             "it to edge.auth.public or drop it here"),
    ]  # fmt: skip
    public_post = MESH.replace(
        "catalog.ListProducts]", "catalog.ListProducts, catalog.CreateProduct]"
    )
    topology = parse(public_post + "  cache: {catalog.CreateProduct: 5s}\n")
    [problem] = conformance.problems(topology, api)
    assert (problem.line, problem.detail) == (
        11,
        "edge.cache catalog.CreateProduct: the contracts bind it to no HTTP GET, and the "
        "edge caches GET reads only",
    )


def test_a_cached_name_means_its_get_in_every_api_version(api: Api) -> None:
    rules = edge.resolve_rules(with_edge(*CACHED), api)
    assert dict(rules.cached) == {
        GET_PRODUCT: 10.0,
        GET_PRODUCT_V2: 10.0,
        "/shop.catalog.v1.CatalogService/ListProducts": 2.0,
        "/shop.catalog.v2.CatalogService/ListProducts": 2.0,
    }
    assert [m.http_gets for m in rules.cached_reads][:2] == [
        ("/v1/products/{id}",),
        ("/v1/products",),
    ]


# -- the rendered configuration --------------------------------------------------------------


def render(topology: Topology, api: Api, tmp_path: Path) -> dict[str, Any]:
    """The edge's bootstrap, as the supervisor writes it, with the files it serves."""
    plan = make_plan(topology, tmp_path, iter(range(30_000, 31_000)).__next__)
    pki = MeshPKI(tmp_path / "pki", topology.trust_domain, topology.namespace)
    cert = pki.ensure("edge", "edge")
    sds = envoy.write_sds(tmp_path, cert.cert_path, cert.key_path, pki.ca_path)
    rules = edge.resolve_rules(topology, api)
    assert plan.edge is not None
    files = edge.write_files(
        tmp_path / "files", ROOT / DESCRIPTOR_SET, topology, rules, "http://e", plan.edge.deny_list
    )
    return edge.edge_config(topology, plan, api, sds, files)


def listeners(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in config["static_resources"]["listeners"]}


def manager(listener: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return config


def names(filters: list[dict[str, Any]]) -> list[str]:
    return [f["name"] for f in filters]


def routes(listener: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = manager(listener)["route_config"]["virtual_hosts"][0]["routes"]
    return found


def test_without_edge_cache_the_edge_is_as_it_was(api: Api, tmp_path: Path) -> None:
    config = render(with_edge(), api, tmp_path)
    assert list(listeners(config)) == ["edge"]
    chain = names(manager(listeners(config)["edge"])["http_filters"])
    assert edge_cache.CACHE not in chain
    assert edge_cache.CONDITIONAL not in chain
    assert "bootstrap_extensions" not in config
    assert edge_cache.FILL_LISTENER not in {
        c["name"] for c in config["static_resources"]["clusters"]
    }


def test_the_cache_sits_after_the_total_limit_and_fetches_through_the_same_chain(
    api: Api, tmp_path: Path
) -> None:
    config = render(with_edge(*CACHED), api, tmp_path)
    found = listeners(config)
    assert list(found) == ["edge", edge_cache.FILL_LISTENER]
    front = manager(found["edge"])["http_filters"]
    at = names(front).index(edge_cache.CACHE)
    assert names(front)[at - 2 : at + 1] == [
        edge_filters.TOTAL_LIMIT, edge_cache.CONDITIONAL, edge_cache.CACHE
    ]  # fmt: skip
    fill = found[edge_cache.FILL_LISTENER]
    # Every filter past the cache, the router too, runs alike on the fill listener, but
    # an answer kept for every client tells no client's rate limits.
    filled = manager(fill)["http_filters"]
    assert names(filled) == names(front[at + 1 :])
    limits = names(filled).index(edge_filters.CLIENT_LIMITS)
    assert filled[limits]["typed_config"].pop("enable_x_ratelimit_headers") == "OFF"
    served = front[at + 1 + limits]["typed_config"]
    assert served.pop("enable_x_ratelimit_headers") == "DRAFT_VERSION_03"
    assert filled == front[at + 1 :]
    cache = front[at]["typed_config"]["extension_config"]
    assert cache["name"] == "envoy.filters.http.cache_v2"
    assert cache["typed_config"]["override_upstream_cluster"] == edge_cache.FILL_LISTENER
    [cluster] = [
        c for c in config["static_resources"]["clusters"] if c["name"] == "edge_cache_fill"
    ]
    internal = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert (
        internal["address"]["envoy_internal_address"]["server_listener_name"] == "edge_cache_fill"
    )
    assert config["bootstrap_extensions"][0]["name"] == "envoy.bootstrap.internal_listener"


def test_the_fill_listener_is_internal_logs_nothing_and_counts_the_clients_address(
    api: Api, tmp_path: Path
) -> None:
    fill = listeners(render(with_edge(*CACHED), api, tmp_path))[edge_cache.FILL_LISTENER]
    assert fill["internal_listener"] == {}
    assert "address" not in fill
    settings = manager(fill)
    assert "access_log" not in settings
    assert (settings["use_remote_address"], settings["xff_num_trusted_hops"]) == (False, 1)


def test_only_the_fill_listeners_cached_routes_ask_for_a_cacheable_answer(
    api: Api, tmp_path: Path
) -> None:
    found = listeners(render(with_edge(*CACHED), api, tmp_path))
    asked = {
        route["match"].get("path"): route["request_headers_to_add"][0]["header"]
        for route in routes(found[edge_cache.FILL_LISTENER])
        if "request_headers_to_add" in route
    }
    ten, two = ({"key": "x-shop-cache", "value": f"max-age={n}"} for n in (10, 2))
    assert asked == {
        GET_PRODUCT: ten,
        GET_PRODUCT_V2: ten,
        "/shop.catalog.v1.CatalogService/ListProducts": two,
        "/shop.catalog.v2.CatalogService/ListProducts": two,
    }
    assert not [route for route in routes(found["edge"]) if "request_headers_to_add" in route]
    # The routes are the front's otherwise.
    assert [r["match"] for r in routes(found["edge"])] == [
        r["match"] for r in routes(found[edge_cache.FILL_LISTENER])
    ]


def test_no_client_can_ask_a_service_for_a_cacheable_answer() -> None:
    mutations = edge_filters.caller_claims_removed()["typed_config"]["mutations"]
    assert {"remove": cacheable.CACHE_HEADER} in mutations["request_mutations"]


def skipped_when(api: Api, tmp_path: Path, name: str) -> list[dict[str, Any]]:
    front = manager(listeners(render(with_edge(*CACHED), api, tmp_path))["edge"])
    [found] = [f for f in front["http_filters"] if f["name"] == name]
    [matcher] = found["typed_config"]["xds_matcher"]["matcher_list"]["matchers"]
    assert matcher["on_match"]["action"]["name"] == "skip"
    predicates: list[dict[str, Any]] = matcher["predicate"]["or_matcher"]["predicate"]
    return predicates


def header_regex(predicate: dict[str, Any]) -> tuple[str, str]:
    single = predicate["single_predicate"]
    return single["input"]["typed_config"]["header_name"], single["value_match"]["safe_regex"][
        "regex"
    ]


def test_the_cache_is_skipped_for_credentials_pins_no_store_and_other_urls(
    api: Api, tmp_path: Path
) -> None:
    predicates = skipped_when(api, tmp_path, edge_cache.CACHE)
    inverted = dict(header_regex(p["not_matcher"]) for p in predicates if "not_matcher" in p)
    present = dict(header_regex(p) for p in predicates if "single_predicate" in p)
    assert inverted[":method"] == "GET"
    assert set(present) == {
        "authorization",
        "x-api-key",
        "x-shop-version",
        "cookie",
        "cache-control",
    }
    assert re.fullmatch(present["cookie"], "theme=dark; shop-version=v2")
    assert not re.fullmatch(present["cookie"], "my-shop-version=v2")
    assert re.fullmatch(present["cache-control"].removeprefix("(?i)"), "max-age=0, no-store")
    cached_urls = inverted[":path"]
    for path in ("/v1/products/p-1", "/v1/products/p-1?x=1", "/v1/products?pageSize=2",
                 "/v2/products/p-1", "/v2/products"):  # fmt: skip
        assert re.fullmatch(cached_urls, path), path
    for path in ("/v1/products/p-1/stock", "/v1/products:batchGet", "/v1/products/", "/v1/orders"):
        assert not re.fullmatch(cached_urls, path), path


def test_the_304_check_runs_only_where_the_cache_does_and_a_tag_was_sent(
    api: Api, tmp_path: Path
) -> None:
    predicates = skipped_when(api, tmp_path, edge_cache.CONDITIONAL)
    assert predicates[0] == {"not_matcher": matchers.request_header("if-none-match", ".*")}
    assert predicates[1:] == skipped_when(api, tmp_path, edge_cache.CACHE)


@pytest.mark.parametrize(
    ("template", "matching", "other"),
    [
        ("/v1/products/{id}", "/v1/products/a%20b", "/v1/products/a/b"),
        ("/v2/{name=products/*}", "/v2/products/p", "/v2/shelves/p"),
        ("/v1/{name=shelves/**}", "/v1/shelves/a/b/c", "/v1/books/a"),
        ("/v1/products:batchGet", "/v1/products:batchGet?ids=a", "/v1/productsXbatchGet"),
    ],
)
def test_a_url_template_becomes_the_regex_of_its_paths(
    template: str, matching: str, other: str
) -> None:
    regex = edge_cache.path_regex(template)
    assert re.fullmatch(regex, matching)
    assert not re.fullmatch(regex, other)


def test_envoy_accepts_the_edge_with_its_cache(api: Api, tmp_path: Path) -> None:
    config = write_config(render(with_edge(*CACHED), api, tmp_path), tmp_path / "edge.yaml")
    refused = refusal(config)
    assert refused == "", refused


# -- the runtime's validators -----------------------------------------------------------------


class Context:
    """What the layer uses of a gRPC server context."""

    def __init__(self, metadata: list[tuple[str, str]], status: grpc.StatusCode | None) -> None:
        self.metadata, self.status = metadata, status
        self.sent: tuple[tuple[str, str], ...] | None = None

    async def send_initial_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.sent = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return tuple(self.metadata)

    def code(self) -> grpc.StatusCode | None:
        return self.status


PRODUCT = catalog_pb.GetProductResponse(product=catalog_pb.Product(id="p-1", name="Tea"))


async def served(metadata: list[tuple[str, str]], status: grpc.StatusCode | None = None) -> Context:
    context = Context(metadata, status)

    async def behavior(request: Any, context: Any) -> Any:
        return PRODUCT

    assert await cacheable.marked(behavior, GET_PRODUCT)(None, context) is PRODUCT
    return context


async def test_an_answer_the_edge_asked_to_cache_carries_its_tag_and_lifetime() -> None:
    sent = (await served([("x-shop-cache", "max-age=10")])).sent
    tag = cacheable.entity_tag(GET_PRODUCT, PRODUCT)
    assert sent == (("etag", tag), ("cache-control", "public, max-age=10"))
    assert re.fullmatch(r'W/"[A-Za-z0-9_-]{22}"', tag)
    # The same answer, the same tag; another answer or another method, another tag.
    assert cacheable.entity_tag(GET_PRODUCT, catalog_pb.GetProductResponse.FromString(
        PRODUCT.SerializeToString())) == tag  # fmt: skip
    other = catalog_pb.GetProductResponse(product=catalog_pb.Product(id="p-1", name="Tee"))
    assert cacheable.entity_tag(GET_PRODUCT, other) != tag
    assert cacheable.entity_tag(GET_PRODUCT_V2, PRODUCT) != tag


@pytest.mark.parametrize(
    ("metadata", "status"),
    [
        ([], None),
        ([("x-shop-cache", "max-age=ten")], None),
        ([("x-shop-cache", "max-age=10")], grpc.StatusCode.NOT_FOUND),
    ],
)
async def test_other_calls_and_failed_ones_send_no_validators(
    metadata: list[tuple[str, str]], status: grpc.StatusCode | None
) -> None:
    assert (await served(metadata, status)).sent is None
