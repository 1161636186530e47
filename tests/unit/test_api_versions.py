"""Two versions of one service's API (`shop.catalog.v1`, `shop.catalog.v2`) in the mesh:
mesh.yaml's `<service>.<Method>` names the method of that name in every version, and
nothing the mesh derives from the contracts keeps one version and drops the other."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh.control.api import Api
from mesh.control.contracts import DESCRIPTOR_SET, Workspace
from mesh.control.envoy import filters
from mesh.control.envoy.edge_rules import resolve_rules
from mesh.control.topology import Topology, load
from tests.support.topology import REPOSITORY_MESH_YAML

V1, V2 = "/shop.catalog.v1.CatalogService", "/shop.catalog.v2.CatalogService"
METHODS = (
    "BatchGetProducts",
    "CreateProduct",
    "DeleteProduct",
    "GetProduct",
    "ListProducts",
    "UpdateProduct",
)


@pytest.fixture(scope="module")
def api() -> Api:
    root = Workspace.find(Path(__file__).parent).root
    return Api.from_descriptor_set(root / DESCRIPTOR_SET)


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load(REPOSITORY_MESH_YAML)


def test_catalog_has_each_method_in_both_versions(api: Api) -> None:
    paths = {m.path for m in api.of("catalog")}
    assert paths == {f"{version}/{name}" for version in (V1, V2) for name in METHODS}
    assert {m.package for m in api.of("catalog")} == {"shop.catalog.v1", "shop.catalog.v2"}


def test_a_name_is_listed_once_however_many_versions_have_it(api: Api) -> None:
    assert api.names("catalog") == list(METHODS)
    assert api.names("catalog", public=True) == list(METHODS)


def test_a_name_means_the_method_in_every_version(api: Api) -> None:
    named = api.named("catalog", ["BatchGetProducts", "GetProduct"])
    assert sorted(m.path for m in named) == [
        f"{V1}/BatchGetProducts",
        f"{V1}/GetProduct",
        f"{V2}/BatchGetProducts",
        f"{V2}/GetProduct",
    ]


def test_the_edge_makes_both_versions_public_and_scoped_alike(api: Api, topology: Topology) -> None:
    rules = resolve_rules(topology, api)
    catalog_public = {path for path in rules.public if path.startswith((V1, V2))}
    assert catalog_public == {
        f"{version}/{name}"
        for version in (V1, V2)
        for name in ("GetProduct", "ListProducts", "BatchGetProducts")
    }
    for version in (V1, V2):
        for name in ("CreateProduct", "UpdateProduct", "DeleteProduct"):
            assert rules.scopes[f"{version}/{name}"] == "catalog:write"
            assert f"{version}/{name}" in rules.secured
    assert {V1[1:], V2[1:]} <= set(rules.grpc_services)


def test_a_callers_grant_admits_the_method_in_every_version(api: Api, topology: Topology) -> None:
    """orders may call `BatchGetProducts`: of v1 and of v2, and nothing else of catalog."""
    policies = filters.rbac(topology, api, "catalog")["typed_config"]["rules"]["policies"]
    granted = {p["url_path"]["path"]["exact"] for p in policies["caller-orders"]["permissions"]}
    assert granted == {f"{V1}/BatchGetProducts", f"{V2}/BatchGetProducts"}
    edge = {p["url_path"]["path"]["exact"] for p in policies["edge-public-methods"]["permissions"]}
    assert {f"{version}/{name}" for version in (V1, V2) for name in METHODS} <= edge
