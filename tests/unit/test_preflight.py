"""The preflight's checks of ports and the run directory, on real loopback sockets."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh.control import preflight
from mesh.control.plan import free_port, make_plan
from mesh.control.topology import Topology, parse
from tests.support.ports import held_port


def with_nats_on(port: int) -> Topology:
    return parse(f"services:\n  catalog: {{}}\nnats:\n  port: {port}\n", "mesh.yaml")


def test_a_taken_fixed_port_names_the_port_what_wanted_it_and_its_line(tmp_path: Path) -> None:
    with held_port() as port:
        topology = with_nats_on(port)
        found = preflight.port_problems(make_plan(topology, tmp_path / "run"), topology)
    assert found == [
        f"mesh.yaml:4: port {port} on 127.0.0.1, for NATS, is taken by another process"
    ]


def test_free_ports_are_no_problem(tmp_path: Path) -> None:
    topology = with_nats_on(free_port())
    assert preflight.port_problems(make_plan(topology, tmp_path / "run"), topology) == []


def test_a_port_given_on_the_command_line_has_no_line(tmp_path: Path) -> None:
    topology = parse(
        "services:\n  identity: {}\nedge:\n  expose: [identity]\n"
        "  auth: {public: [identity.GetJwks]}\n"
    )
    with held_port() as port:
        plan = make_plan(topology, tmp_path / "run", edge_port=port)
        found = preflight.port_problems(plan, topology)
    assert found == [f"port {port} on 127.0.0.1, for the edge, is taken by another process"]


def test_two_listeners_of_the_plan_on_one_port_are_named_both(tmp_path: Path) -> None:
    topology = parse(
        "services:\n  identity: {}\nnats: {port: 4333}\nedge:\n  expose: [identity]\n"
        "  auth: {public: [identity.GetJwks]}\n"
    )
    plan = make_plan(topology, tmp_path / "run", edge_port=4333)
    assert preflight.port_problems(plan, topology) == [
        "mesh.yaml:3: port 4333 is wanted by both NATS and the edge"
    ]


@pytest.mark.parametrize(
    ("port", "reason"), [(70_000, "is not a port (0 to 65535)"), (-1, "is not a port (0 to 65535)")]
)
def test_a_number_that_is_no_port_is_reported(port: int, reason: str) -> None:
    assert preflight.unavailable("127.0.0.1", port) == reason


def test_a_run_dir_under_a_file_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    run_dir = tmp_path / "file" / "run"
    assert preflight.run_dir_problems(run_dir) == [
        f"the run directory {run_dir} cannot be made: {tmp_path / 'file'} is not a directory"
    ]


def test_a_run_dir_that_can_be_made_is_no_problem_and_is_not_made(tmp_path: Path) -> None:
    run_dir = tmp_path / "a" / "b"
    assert preflight.run_dir_problems(run_dir) == []
    assert not (tmp_path / "a").exists()


def test_every_problem_is_found_at_once(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with held_port() as port:
        found = preflight.problems(
            with_nats_on(port), tmp_path / "missing.binpb", tmp_path / "file" / "run"
        )
    assert len(found) == 3
    assert "cannot be made" in found[0]
    assert found[1] == f"{tmp_path / 'missing.binpb'} is missing: run `make gen` first"
    assert found[2].startswith(f"mesh.yaml:4: port {port} on 127.0.0.1, for NATS")


def test_a_version_whose_module_does_not_exist_is_a_problem() -> None:
    topology = parse(
        "services:\n  catalog:\n    versions:\n      v1: {module: services.catalog}\n"
        "      v2: {module: services.catalog_next}\n      v3: {module: nowhere.at_all}\n"
    )
    assert preflight.module_problems(topology) == [
        "mesh.yaml: services.catalog.versions.v2.module: no module 'services.catalog_next' to run",
        "mesh.yaml: services.catalog.versions.v3.module: no module 'nowhere.at_all' to run",
    ]
