"""Search without its embedding model (`SHOP_SEARCH_MODEL=off`), in a mesh of its own:
it finds products by their words and not by a paraphrase, answers `RANKING_KEYWORD`,
and its health details, as `meshctl status` shows them, say why.

A module of its own so that its mesh never runs beside test_search.py's: each mesh's
Envoys take about 43 of a user's inotify instances (Linux's default limit: 128), and
the suite's shared mesh runs throughout."""

from __future__ import annotations

import httpx
import pytest

from tests.support.mesh import ROOT, RunningMesh, bearer, mesh_up
from tests.support.search import CATALOG, create, search, top
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


def test_without_the_model_search_ranks_by_keywords_and_its_health_says_why(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    directory = tmp_path_factory.mktemp("search-keywords")
    keywords_only = RunningMesh(
        directory / "run", ROOT / "mesh.yaml", environment={"SHOP_SEARCH_MODEL": "off"}
    )
    with mesh_up(keywords_only) as mesh, httpx.Client(base_url=mesh.edge_url) as edge:
        admin = bearer(mesh.token("search-admin", "catalog:write"))
        kettle = create(edge, admin, CATALOG["kettle"][0])
        wait_until(lambda: top(edge, "kettle") == kettle or None, "the kettle", within=10)
        body = search(edge, "electric kettle")
        assert body["ranking"] == "RANKING_KEYWORD"
        assert "results" not in search(edge, CATALOG["kettle"][1])
        why = "runs without semantic ranking: semantic ranking is off (SHOP_SEARCH_MODEL=off)"
        search_0 = wait_until(
            lambda: (i := mesh.instance("search-0"))["degraded"] and i, "search's health details"
        )
        assert search_0["degraded"] == [why]
        status = mesh.meshctl("status").stdout
        assert f"degraded: search-0: {why}" in status, status
