"""`meshctl up` refuses at once, starting nothing, what would stop the mesh later: a port
another process holds, a method or event mesh.yaml names that the contracts lack. Each
problem is one line; all of them are told together."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.control.binaries import find_binary
from tests.support.mesh import FREE_EDGE_PORTS, ROOT, RunningMesh
from tests.support.ports import held_port as holding

pytestmark = pytest.mark.integration

MESH_YAML = (ROOT / "mesh.yaml").read_text()
#: The answer comes before a mesh could have started anything: started, the edge binds
#: its port 10 s or more after NATS and every service. Unloaded, the refusal takes about
#: a second, nearly all of it meshctl importing the control plane (0.8 s of CPU); the
#: bound leaves room for a machine busy with other tests.
PROMPT_SECONDS = 5.0
#: Modes of `meshctl up`: in the background, and in the foreground.
MODES = [("--detach",), ()]


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port held by someone else: bound and listening until the test ends."""
    with holding() as port:
        yield port


def edited(text: str, *replacements: tuple[str, str]) -> str:
    for old, new in replacements:
        assert text.count(old) == 1, f"mesh.yaml no longer has {old!r} once"
        text = text.replace(old, new)
    return text


def line_of(text: str, fragment: str) -> int:
    [line] = [n for n, content in enumerate(text.splitlines(), 1) if fragment in content]
    return line


@contextlib.contextmanager
def nothing_left_running(run_dir: Path, config: Path) -> Iterator[None]:
    """Should the preflight let a mesh start after all, stop it (by its pids) at the end."""
    try:
        yield
    finally:
        if (run_dir / "state.json").exists():
            RunningMesh(run_dir, config).down()


def meshctl_up(
    tmp_path: Path, text: str, *options: str
) -> tuple[subprocess.CompletedProcess[str], float, Path]:
    """`meshctl up OPTIONS` with the topology `text`: its result, its seconds, the config."""
    config = tmp_path / "mesh.yaml"
    config.write_text(text)
    run_dir = tmp_path / "run"
    argv = [find_binary("meshctl"), "up", *options, "--run-dir", str(run_dir)]
    argv += ["--config", str(config)]
    with nothing_left_running(run_dir, config):
        started = time.monotonic()
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
        )
        elapsed = time.monotonic() - started
    assert not run_dir.exists(), "the preflight created the run directory"
    return result, elapsed, config


@pytest.mark.parametrize("mode", MODES, ids=["detach", "foreground"])
def test_a_taken_edge_port_is_one_line_at_once_and_nothing_starts(
    tmp_path: Path, held_port: int, mode: tuple[str, ...]
) -> None:
    text = edited(MESH_YAML, ("  port: 8080\n", f"  port: {held_port}\n"))
    result, elapsed, config = meshctl_up(tmp_path, text, *mode, "--https-port", "0")
    assert result.returncode == 1, result.stdout + result.stderr
    line = line_of(text, f"port: {held_port}")
    assert result.stderr.splitlines() == [
        f"meshctl: {config}:{line}: port {held_port} on 127.0.0.1, for the edge, "
        "is taken by another process"
    ]
    assert result.stdout == ""
    assert elapsed < PROMPT_SECONDS


def test_an_unknown_public_method_is_told_at_its_line_with_the_likely_one(
    tmp_path: Path,
) -> None:
    text = edited(MESH_YAML, ("      - catalog.ListProducts\n", "      - catalog.ListProdcuts\n"))
    result, elapsed, config = meshctl_up(tmp_path, text, "--detach", *FREE_EDGE_PORTS)
    assert result.returncode == 1, result.stdout + result.stderr
    [told] = result.stderr.splitlines()
    line = line_of(text, "catalog.ListProdcuts")
    assert told.startswith(
        f"meshctl: {config}:{line}: edge.auth.public entry catalog.ListProdcuts: "
        "catalog has no public method 'ListProdcuts'"
    )
    assert told.endswith("; did you mean 'catalog.ListProducts'?")
    assert "Traceback" not in result.stderr
    assert elapsed < PROMPT_SECONDS


def test_every_problem_is_told_together_one_line_each(tmp_path: Path, held_port: int) -> None:
    text = edited(
        MESH_YAML,
        ("  port: 8080\n", f"  port: {held_port}\n"),
        ("      - catalog.ListProducts\n", "      - catalog.ListProdcuts\n"),
        ("{methods: [BatchGetProducts]}", "{methods: [BatchGetProduct]}"),
        ("[orders.order_confirmed, orders.order_cancelled]", "[orders.order_confirm]"),
    )
    result, _, config = meshctl_up(tmp_path, text, "--detach")
    assert result.returncode == 1, result.stdout + result.stderr
    header, *problems = result.stderr.splitlines()
    assert header == "meshctl: 4 problems, nothing started:"
    # mesh.yaml against the contracts in the file's order, then the ports of the plan.
    expected = [
        (line_of(text, "catalog.ListProdcuts"), "edge.auth.public entry catalog.ListProdcuts: "),
        (line_of(text, "[BatchGetProduct]"), "services.orders.calls.catalog.methods: "),
        (
            line_of(text, "[orders.order_confirm]"),
            "services.notifications.consumes entry 'orders.order_confirm': ",
        ),
        (line_of(text, f"port: {held_port}"), f"port {held_port} on 127.0.0.1, for the edge, "),
    ]
    assert len(problems) == len(expected), result.stderr
    for problem, (line, what) in zip(problems, expected, strict=True):
        assert problem.startswith(f"  {config}:{line}: {what}"), problem


def test_render_refuses_what_the_contracts_lack_as_up_does(tmp_path: Path) -> None:
    text = edited(MESH_YAML, ("      - catalog.ListProducts\n", "      - catalog.ListProdcuts\n"))
    config = tmp_path / "mesh.yaml"
    config.write_text(text)
    result = subprocess.run(
        [find_binary("meshctl"), "render", "envoy", "--check", "--config", str(config)],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    [told] = result.stderr.splitlines()
    line = line_of(text, "catalog.ListProdcuts")
    assert told.startswith(f"meshctl: {config}:{line}: edge.auth.public entry catalog.ListProdcuts")
