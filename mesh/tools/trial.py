"""A mesh of its own for `meshctl bench` and `meshctl chaos`.

It is the checkout's `mesh.yaml` with a command's changes on top (a benchmark lifts the
edge's rate limit, a chaos scenario adds replicas), started detached from its own run
directory with the edge on a free port, so a mesh the user runs from `.mesh/` is left
alone. `meshctl down`'s code stops it, by the pids it recorded, however the command ends.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from nats.js import JetStreamContext

from mesh.control import local as control
from mesh.control import natsconf
from mesh.control.pki import MeshPKI
from mesh.control.state import read_state
from mesh.control.topology import Topology

log = logging.getLogger(__name__)

Adjust = Callable[[dict[str, Any]], None]
#: What a read through the edge sends to reach its service, past the edge's cache
#: (`edge.cache`): the scenarios that load a service through the edge, and the benchmark's
#: uncached path, measure the service, not the cache.
UNCACHED = {"cache-control": "no-store"}
#: The file that marks a run directory as a throwaway mesh's, which a new run may wipe.
TRIAL_MARKER = "TRIAL"


@dataclass
class TrialMesh:
    """A running throwaway mesh, as its supervisor's state describes it."""

    root: Path
    run_dir: Path

    @property
    def config(self) -> Path:
        """The topology the mesh runs: mesh.yaml as the command changed it."""
        return self.run_dir / control.TOPOLOGY_FILE

    def topology(self) -> Topology:
        return control.load_topology(self.root, self.config)

    def pki(self) -> MeshPKI:
        """The mesh's CA and the certificates it issued (to speak as one of its identities)."""
        topology = self.topology()
        return MeshPKI(self.run_dir / "pki", topology.trust_domain, topology.namespace)

    def state(self) -> dict[str, Any]:
        return read_state(self.run_dir)

    def instances(self, service: str) -> list[dict[str, Any]]:
        return [i for i in self.state()["instances"] if i["service"] == service]

    def instance(self, name: str) -> dict[str, Any]:
        return next(i for i in self.state()["instances"] if i["instance"] == name)

    @property
    def edge(self) -> dict[str, Any]:
        edge: dict[str, Any] | None = self.state()["edge"]
        if edge is None:
            raise control.ControlError("the mesh exposes nothing at the edge")
        return edge

    @property
    def edge_url(self) -> str:
        url: str = self.edge["url"]
        return url

    def token(self, subject: str, *scopes: str) -> str:
        """A token signed by this mesh's identity service (`meshctl token`)."""
        scope_args = [arg for scope in scopes for arg in ("--scope", scope)]
        minted = subprocess.run(
            [sys.executable, "-m", "mesh.cli", "token", "--subject", subject, *scope_args,
             "--run-dir", str(self.run_dir)],
            cwd=self.root, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if minted.returncode != 0:
            raise control.ControlError(f"meshctl token failed: {minted.stderr.strip()}")
        return minted.stdout.strip()

    @contextlib.asynccontextmanager
    async def jetstream(self) -> AsyncIterator[JetStreamContext]:
        """JetStream as the mesh's administrator (`meshctl`'s identity), reconnecting
        for as long as it is used (a scenario may restart nats-server)."""
        settings = natsconf.admin_from_state(self.state())
        client = await settings.connect(
            max_reconnect_attempts=-1, reconnect_time_wait=0.25, error_cb=_reconnecting
        )
        try:
            yield client.jetstream()
        finally:
            await client.close()

    def stocked_product(self, stock: int) -> str:
        """A product with `stock` units, created through the edge as a catalog administrator."""
        token = self.token("trial-administrator", "catalog:write")
        product = {"name": "Kettle", "category": "kitchen", "weightGrams": 1200,
                   "price": {"currencyCode": "EUR", "units": "25", "nanos": 500000000}}  # fmt: skip
        created = self.post_json("/v1/products", {"product": product, "initialStock": stock}, token)
        product_id: str = created["product"]["id"]
        return product_id

    def post_json(self, path: str, body: dict[str, Any], token: str) -> dict[str, Any]:
        """POST `body` to the edge; the JSON answer, or ControlError with the edge's reply."""
        request = urllib.request.Request(
            self.edge_url + path,
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise control.ControlError(
                f"POST {path}: HTTP {error.code}: {error.read().decode(errors='replace')}"
            ) from None
        return answer


def say(line: str) -> None:
    """Progress of a command on a throwaway mesh: on stderr, so stdout is its report."""
    print(line, file=sys.stderr, flush=True)


async def _reconnecting(error: Exception) -> None:
    # nats-server restarting (a chaos scenario kills it) is expected: no traceback.
    log.debug("NATS: %s", error)


@contextlib.contextmanager
def _affinity(cpus: set[int] | None) -> Iterator[None]:
    """This thread (and what it starts) on `cpus` meanwhile; None: no change."""
    if cpus is None:
        yield
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


@contextlib.contextmanager
def started(
    root: Path,
    run_dir: Path,
    adjust: Adjust,
    say: Callable[[str], None],
    cpus: set[int] | None = None,
) -> Iterator[TrialMesh]:
    """Start `mesh.yaml` changed by `adjust` from a fresh `run_dir`; stop it on the way out.

    With `cpus`, every process of the mesh runs on those CPUs only (they inherit the
    affinity of the supervisor, which inherits it from this thread while it starts it).
    """
    if control.running_state(run_dir) is not None:
        raise control.ControlError(
            f"a mesh is already running from {run_dir}; `meshctl down --run-dir {run_dir}`"
        )
    marker = run_dir / TRIAL_MARKER
    if run_dir.exists() and any(run_dir.iterdir()) and not marker.exists():
        raise control.ControlError(
            f"{run_dir} holds something other than a throwaway mesh; give another --run-dir"
        )
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    marker.write_text("a throwaway mesh of `meshctl bench` or `meshctl chaos`; wiped each run\n")
    topology = yaml.safe_load((root / control.TOPOLOGY_FILE).read_text())
    adjust(topology)
    mesh = TrialMesh(root, run_dir)
    mesh.config.write_text(yaml.safe_dump(topology, sort_keys=False))
    say(f"starting a mesh of its own from {run_dir} ...")
    try:
        with contextlib.redirect_stdout(io.StringIO()), _affinity(cpus):  # no status table
            control.up_detached(root, run_dir, mesh.config, edge_port=0, https_port=0)
        yield mesh
    finally:
        with contextlib.redirect_stdout(io.StringIO()):
            control.down(run_dir)
        say(f"stopped the mesh of {run_dir}")
