"""A real mesh for the end-to-end tests (`meshctl up --detach`), shared by a session.

The topology is the repository's `mesh.yaml` with what the tests need on top: two
inventory replicas (for load balancing and ejection) and orders calling payments (for
retries of a transient UNAVAILABLE). The edge listens on a free port. The mesh is
stopped with `meshctl down`, and every process it ran is checked by pid afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.binaries import find_binary
from mesh.contracts import DESCRIPTOR_SET, Workspace
from mesh.supervisor import all_pids, pid_alive

ROOT = Workspace.find(Path(__file__).parent).root


@dataclass
class RunningMesh:
    run_dir: Path
    config: Path

    def meshctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [find_binary("meshctl"), *args, "--run-dir", str(self.run_dir)],
            capture_output=True, text=True, timeout=240, check=check, cwd=ROOT,
        )  # fmt: skip

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(self.meshctl("status", "--json").stdout)
        return state

    def instance(self, name: str) -> dict[str, Any]:
        return next(i for i in self.state()["instances"] if i["instance"] == name)

    def pki(self, instance: str) -> tuple[Path, Path]:
        directory = self.run_dir / "pki" / instance
        return directory / "cert.pem", directory / "key.pem"

    def down(self) -> list[int]:
        """`meshctl down`, then kill by pid whatever outlived it; return those pids."""
        try:
            pids = all_pids(json.loads((self.run_dir / "state.json").read_text()))
        except FileNotFoundError:
            pids = []
        self.meshctl("down", check=False)
        survivors = [pid for pid in pids if pid_alive(pid)]
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)
        return survivors

    @property
    def edge_url(self) -> str:
        url: str = self.state()["edge"]["url"]
        return url

    def token(self, subject: str, *scopes: str) -> str:
        """A token signed by this mesh's identity service (`meshctl token`)."""
        args = [arg for scope in scopes for arg in ("--scope", scope)]
        return self.meshctl("token", "--subject", subject, *args).stdout.strip()

    @property
    def ca(self) -> Path:
        return self.run_dir / "pki" / "ca" / "ca.pem"

    def stats(self, instance: str) -> dict[str, int]:
        """The Envoy counters and gauges of `instance`'s sidecar."""
        port = self.instance(instance)["admin_port"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as response:
            text = response.read().decode()
        found = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if value.strip().lstrip("-").isdigit():
                found[name] = int(value)
        return found


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    """The real grpcurl, with the generated descriptor set (no reflection needed)."""
    protoset = str(ROOT / DESCRIPTOR_SET)
    return subprocess.run(
        [find_binary("grpcurl"), "-connect-timeout", "3", "-protoset", protoset, *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    directory = tmp_path_factory.mktemp("mesh")
    topology = yaml.safe_load((ROOT / "mesh.yaml").read_text())
    topology["services"]["inventory"]["replicas"] = 2
    topology["services"]["orders"]["calls"]["payments"] = {}
    config = directory / "mesh.yaml"
    config.write_text(yaml.safe_dump(topology))
    running = RunningMesh(directory / "run", config)
    started = running.meshctl(
        "up", "--detach", "--config", str(config), "--edge-port", "0", check=False
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield running
    finally:
        survivors = running.down()
        assert survivors == [], f"processes outlived `meshctl down`: {survivors}"
