"""An expensive method is never tried again after it may have started, through real Envoys.

A small mesh of its own (identity behind an edge) whose app is stopped with SIGSTOP, so
calls to it hang: whether the edge tries again shows in its counters. (Deadlines carried
hop by hop are checked on an order's trace, in test_tracing.)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator

import pytest

from mesh.control import envoy
from tests.support.mesh import RunningMesh, grpcurl, mesh_up

pytestmark = pytest.mark.integration

CONFIG = """\
services:
  identity:
    methods:
      Login: {cost: expensive}
edge:
  expose: [identity]
  auth: {public: [identity.Login, identity.GetJwks]}
"""


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    directory = tmp_path_factory.mktemp("overload-policies")
    config = directory / "mesh.yaml"
    config.write_text(CONFIG)
    with mesh_up(RunningMesh(directory / "run", config)) as running:
        yield running


@contextlib.contextmanager
def stopped(mesh: RunningMesh, instance: str) -> Iterator[None]:
    """`instance`'s app stopped (SIGSTOP by its pid): calls to it hang until it goes on."""
    pid = mesh.instance(instance)["app_pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def edge_counters(mesh: RunningMesh, cluster: str) -> dict[str, int]:
    found = envoy.admin_stats(mesh.state()["edge"]["admin_socket"], f"^cluster\\.{cluster}\\.")
    return {name.removeprefix(f"cluster.{cluster}."): n for name, n in found.items()}


def grpc_edge(mesh: RunningMesh, method: str, body: dict[str, object], *flags: str) -> str:
    """`method` through the edge as native gRPC (grpcurl); its output."""
    address = mesh.edge_url.removeprefix("http://")
    done = grpcurl("-plaintext", *flags, "-d", json.dumps(body), address, method)
    return done.stdout + done.stderr


@pytest.mark.parametrize(
    ("method", "body", "retried"),
    [
        # Login hashes a password: sent again while the first try may still run, it would
        # only add another hash to an identity already too slow.
        ("Login", {"email": "ada@example.org", "password": "not this one"}, False),
        # GetJwks is as idempotent, and cheap: tried again after its 1 s per-try timeout.
        ("GetJwks", {}, True),
    ],
)
def test_only_cheap_idempotent_methods_are_tried_again_after_a_per_try_timeout(
    small: RunningMesh, method: str, body: dict[str, object], retried: bool
) -> None:
    before = edge_counters(small, "identity")
    with stopped(small, "identity-0"):
        output = grpc_edge(
            small, f"shop.identity.v1.IdentityService/{method}", body, "-max-time", "1.8"
        )
    assert "DeadlineExceeded" in output or "DEADLINE_EXCEEDED" in output, output
    after = edge_counters(small, "identity")

    def grew(counter: str) -> int:
        return after.get(counter, 0) - before.get(counter, 0)

    assert grew("upstream_rq_per_try_timeout") == (1 if retried else 0)
    assert grew("upstream_rq_retry") == (1 if retried else 0)
    assert grew("upstream_rq_total") == (2 if retried else 1)
