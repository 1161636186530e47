"""API keys at the edge without a running mesh: `edge.api_keys` in mesh.yaml, the filters
rendered for them (the key's provider, the deny list, the plans' buckets, the refusals'
headers), the loopback listener the deny list is asked through, identity's sidecar
admitting that call, the deny list's file and the containers' volumes."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.control import deny_list, envoy
from mesh.control.api import Api
from mesh.control.contracts import DESCRIPTOR_SET, Workspace
from mesh.control.envoy import edge, filters
from mesh.control.envoy.edge_filters import DENY_LIST_FILE
from mesh.control.pki import MeshPKI
from mesh.control.plan import make_plan
from mesh.control.topology import Plan, Topology, parse
from mesh.deploy import compose, kube
from tests.support.topology import parse_error

EDGE = """\
services:
  identity: {}
  inventory: {}
edge:
  port: 8080
  expose: [identity, inventory]
  auth:
    public: [identity.GetJwks, inventory.GetStock]
    scopes: {inventory.SetStock: inventory:write}
"""
PLANS = """\
  api_keys:
    plans:
      free: {requests_per_second: 5, requests_per_day: 10000}
      gold: {requests_per_second: 50, burst: 60, requests_per_day: 7}
"""
REVOCATIONS_PATH = "/shop.identity.v1.IdentityService/ListRevokedApiKeys"


@pytest.fixture(scope="module")
def api() -> Api:
    return Api.from_descriptor_set(Workspace.find(Path(__file__).parent).root / DESCRIPTOR_SET)


def with_keys() -> Topology:
    return parse(EDGE + PLANS)


def rendered(topology: Topology, api: Api, tmp_path: Path) -> dict[str, Any]:
    ports = itertools.count(20_000)
    plan = make_plan(topology, tmp_path, lambda: next(ports))
    pki = MeshPKI(tmp_path / "pki", topology.trust_domain, topology.namespace)
    cert = pki.ensure("edge", "edge")
    sds = envoy.write_sds(tmp_path, cert.cert_path, cert.key_path, pki.ca_path)
    return edge.edge_config(topology, plan, api, sds, edge.files_in(tmp_path))


def listeners(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in config["static_resources"]["listeners"]}


def chain(config: dict[str, Any], listener: str = "edge") -> dict[str, dict[str, Any]]:
    manager = listeners(config)[listener]["filter_chains"][0]["filters"][0]["typed_config"]
    return {f["name"]: f for f in manager["http_filters"]}


# -- mesh.yaml -----------------------------------------------------------------------------


def test_plans_are_read_with_a_burst_of_twice_the_rate_unless_given() -> None:
    assert parse(EDGE).edge.api_keys.plans == {}
    plans = with_keys().edge.api_keys.plans
    assert plans == {"free": Plan(5, 10, 10_000), "gold": Plan(50, 60, 7)}
    assert plans["free"].seconds_per_day_token == 9  # 86,400 / 10,000, rounded up
    assert plans["gold"].seconds_per_day_token == 12_343


@pytest.mark.parametrize(
    ("plans", "expected"),
    [
        ("Gold: {requests_per_second: 1, requests_per_day: 1}", "'Gold' is not a plan name"),
        ("free: {requests_per_second: 1}", "edge.api_keys.plans.free needs `requests_per_day`"),
        ("free: {requests_per_second: 0, requests_per_day: 1}", "must be between 1 and"),
        ("free: {rps: 1, requests_per_day: 1}", "unknown key 'rps'"),
    ],
)
def test_a_wrong_plan_is_refused_at_its_line(plans: str, expected: str) -> None:
    error = parse_error(EDGE + f"  api_keys:\n    plans:\n      {plans}\n")
    assert error.line == 12
    assert expected in str(error)


# -- the edge's filters ----------------------------------------------------------------------


def test_a_key_is_a_second_provider_whose_claims_go_where_a_tokens_do(
    api: Api, tmp_path: Path
) -> None:
    jwt = chain(rendered(with_keys(), api, tmp_path))["envoy.filters.http.jwt_authn"]
    providers = jwt["typed_config"]["providers"]
    key, token = providers["api_keys"], providers["identity"]
    assert key["audiences"] == ["shop-api-keys"] != token["audiences"]
    assert key["from_headers"] == [{"name": "x-api-key"}]
    assert key["payload_in_metadata"] == token["payload_in_metadata"]
    assert key["remote_jwks"] == token["remote_jwks"]
    assert key["forward"] is False
    rules = {r["match"].get("path"): r["requires"] for r in jwt["typed_config"]["rules"]}
    either = [{"provider_name": "identity"}, {"provider_name": "api_keys"}]
    assert rules["/shop.inventory.v1.InventoryService/GetStock"] == {
        "requires_any": {"requirements": [*either, {"allow_missing": {}}]}
    }
    assert rules["/shop.inventory.v1.InventoryService/SetStock"] == {
        "requires_any": {"requirements": either}
    }


def test_without_plans_the_edge_takes_no_keys(api: Api, tmp_path: Path) -> None:
    config = rendered(parse(EDGE), api, tmp_path)
    filters_ = chain(config)
    assert list(filters_["envoy.filters.http.jwt_authn"]["typed_config"]["providers"]) == [
        "identity"
    ]
    assert not {"single_credential", "api_key_revocations", "edge_api_key_quotas"} & set(filters_)
    assert "edge_deny_list" not in listeners(config)


def test_keys_are_checked_in_order_one_credential_the_deny_list_then_seconds_then_days(
    api: Api, tmp_path: Path
) -> None:
    names = list(chain(rendered(with_keys(), api, tmp_path)))
    order = [
        "throttled_replies",
        "single_credential",
        "envoy.filters.http.jwt_authn",
        "api_key_revocations",
        "edge_client_rate_limits",
        "edge_api_key_quotas",
        "envoy.filters.http.rbac",
    ]
    assert [name for name in names if name in order] == order
    assert names[0:2] == ["envoy.filters.http.header_to_metadata", "throttled_replies"]


def test_the_deny_list_is_read_from_a_watched_file(api: Api, tmp_path: Path) -> None:
    revocations = chain(rendered(with_keys(), api, tmp_path))["api_key_revocations"]
    source = revocations["config_discovery"]["config_source"]["path_config_source"]
    directory = tmp_path / "edge" / "keys"
    assert source == {
        "path": str(directory / DENY_LIST_FILE),
        "watched_directory": {"path": str(directory)},
    }


def test_a_plans_buckets_are_per_consumer_per_second_and_per_day(api: Api, tmp_path: Path) -> None:
    filters_ = chain(rendered(with_keys(), api, tmp_path))
    seconds = filters_["edge_client_rate_limits"]["typed_config"]
    buckets = {
        tuple((e["key"], e.get("value")) for e in d["entries"]): d["token_bucket"]
        for d in seconds["descriptors"]
    }
    assert buckets[(("plan", "gold"), ("subject", None))] == {
        "max_tokens": 60, "tokens_per_fill": 50, "fill_interval": "1s",
    }  # fmt: skip
    # A token (no plan) keeps its `per_client` bucket.
    assert (("plan", "-"), ("subject", None)) in buckets
    days = filters_["edge_api_key_quotas"]["typed_config"]
    assert days["descriptors"][1] == {
        "entries": [{"key": "plan", "value": "gold"}, {"key": "subject"}],
        "token_bucket": {"max_tokens": 7, "tokens_per_fill": 7, "fill_interval": "86400s"},
    }
    assert "enable_x_ratelimit_headers" not in days
    assert days["response_headers_to_add"][0]["header"] == {"key": "x-shop-quota", "value": "day"}


def test_a_refusal_of_the_day_says_the_days_allowance_and_when_one_call_refills(
    api: Api, tmp_path: Path
) -> None:
    lua = chain(rendered(with_keys(), api, tmp_path))["throttled_replies"]
    lua_config = lua["typed_config"]["extension_config"]["typed_config"]
    code = lua_config["default_source_code"]["inline_string"]
    assert '["gold"] = {limit = "7", reset = "12343"}' in code
    assert '["free"] = {limit = "10000", reset = "9"}' in code
    # Skipped for every answer but a 429.
    [skip] = lua["typed_config"]["xds_matcher"]["matcher_list"]["matchers"]
    status = skip["predicate"]["not_matcher"]["single_predicate"]
    assert status["input"]["name"] == ":status"
    assert status["value_match"]["safe_regex"]["regex"] == "429"


def test_a_key_of_an_unknown_plan_is_denied(api: Api, tmp_path: Path) -> None:
    rbac = chain(rendered(with_keys(), api, tmp_path))["envoy.filters.http.rbac"]
    policy = rbac["typed_config"]["rules"]["policies"]["api-key-of-unknown-plan"]
    [principal] = policy["principals"]
    regex = principal["and_ids"]["ids"][1]["not_id"]["sourced_metadata"]["metadata_matcher"]
    assert regex["value"]["string_match"]["safe_regex"]["regex"] == "^(free|gold)$"


# -- the deny list -------------------------------------------------------------------------


def test_the_deny_list_is_asked_on_loopback_and_routes_only_that_method(
    api: Api, tmp_path: Path
) -> None:
    listener = listeners(rendered(with_keys(), api, tmp_path))["edge_deny_list"]
    assert listener["address"]["socket_address"]["address"] == "127.0.0.1"
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    [route] = manager["route_config"]["virtual_hosts"][0]["routes"]
    assert route["match"] == {"path": REVOCATIONS_PATH}
    assert route["route"]["cluster"] == "identity"


def test_identitys_sidecar_admits_the_edge_to_the_deny_list_only_with_keys(api: Api) -> None:
    def edge_paths(topology: Topology) -> list[str]:
        policy = filters.rbac(topology, api, "identity")["typed_config"]["rules"]["policies"]
        return [
            p["url_path"]["path"]["exact"] for p in policy["edge-public-methods"]["permissions"]
        ]

    assert REVOCATIONS_PATH in edge_paths(with_keys())
    assert REVOCATIONS_PATH not in edge_paths(parse(EDGE))


def test_the_deny_list_file_refuses_revoked_ids_or_every_key_before_the_first_read(
    tmp_path: Path,
) -> None:
    def principals(revoked: list[str] | None) -> list[Any]:
        deny_list.write(tmp_path, revoked)
        [resource] = json.loads((tmp_path / DENY_LIST_FILE).read_text())["resources"]
        assert resource["name"] == "api_key_revocations"
        policies = resource["typed_config"]["rules"]["policies"]
        return policies["revoked-api-keys"]["principals"] if policies else []

    def matcher(principal: dict[str, Any]) -> Any:
        found = principal["sourced_metadata"]["metadata_matcher"]
        return found["path"][1]["key"], found["value"]

    assert [matcher(p) for p in principals(["b2", "a1"])] == [
        ("jti", {"string_match": {"exact": "a1"}}),
        ("jti", {"string_match": {"exact": "b2"}}),
    ]
    assert principals([]) == []
    assert [matcher(p) for p in principals(None)] == [("plan", {"present_match": True})]
    assert [p.name for p in tmp_path.iterdir()] == [DENY_LIST_FILE]


# -- containers ----------------------------------------------------------------------------


def test_compose_shares_the_deny_list_between_the_companion_and_the_edge(api: Api) -> None:
    document = yaml.safe_load(compose.render(with_keys(), api).files[Path(compose.COMPOSE_FILE)])
    services = document["services"]
    assert "edge-keys:/shop/edge-keys" in services["edge-files"]["volumes"]
    assert "edge-keys:/shop/edge-keys" in services["edge-companion"]["volumes"]
    assert "edge-keys:/shop/edge-keys:ro" in services["edge"]["volumes"]
    command = services["edge-companion"]["command"]
    assert command[-4:] == ["--deny-list-port", "15081", "--deny-list-dir", "/shop/edge-keys"]
    assert "edge-keys" in document["volumes"]


def test_kubernetes_keeps_the_deny_list_in_an_empty_dir_of_the_edges_pod(api: Api) -> None:
    files = kube.render(with_keys(), api).files
    objects = [o for o in yaml.safe_load_all(files[kube.BASE / "edge.yaml"]) if o]
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert {"name": "edge-keys", "emptyDir": {}} in pod["volumes"]
    mounted = {
        c["name"]: [m for m in c["volumeMounts"] if m["name"] == "edge-keys"]
        for c in [*pod["initContainers"], *pod["containers"]]
    }
    path = "/shop/edge-keys"
    assert mounted == {
        "edge-files": [{"name": "edge-keys", "mountPath": path}],
        "envoy": [{"name": "edge-keys", "mountPath": path, "readOnly": True}],
        "companion": [{"name": "edge-keys", "mountPath": path}],
    }
