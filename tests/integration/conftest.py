"""A real mesh for the end-to-end tests (`meshctl up --detach`), shared by a session.

The topology is the repository's `mesh.yaml` with what the tests need on top: two
inventory replicas (for load balancing and ejection), orders calling payments (for
retries of a transient UNAVAILABLE), and a few more methods granted to the callers whose
sidecars the runtime tests call through. The edge listens on a free port. The mesh is
stopped with `meshctl down`, and every process it ran is checked by pid afterwards. The
helpers the tests use with it are in `tests/support/mesh.py`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml

from tests.support.mesh import ROOT, RunningMesh, mesh_up


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    directory = tmp_path_factory.mktemp("mesh")
    topology = yaml.safe_load((ROOT / "mesh.yaml").read_text())
    services = topology["services"]
    services["inventory"]["replicas"] = 2
    # The runtime tests also call these through the callers' sidecars.
    services["orders"]["calls"]["payments"] = {"methods": ["AuthorizePayment"]}
    services["orders"]["calls"]["catalog"]["methods"] += ["CreateProduct", "ListProducts"]
    services["catalog"]["calls"]["inventory"]["methods"].append("GetStock")
    config = directory / "mesh.yaml"
    config.write_text(yaml.safe_dump(topology))
    with mesh_up(RunningMesh(directory / "run", config)) as running:
        yield running
