"""Rollouts: the judgement of a window, the split each state asks for, and the controller
moving a rollout on from the counts of its callers' Envoys (read here from a fake)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mesh.control import routing
from mesh.control.envoy.stats import Counts, served_counts
from mesh.control.plan import make_plan
from mesh.control.rollouts import actions, analysis, store
from mesh.control.rollouts.actions import RolloutError
from mesh.control.rollouts.controller import RolloutController
from mesh.control.rollouts.model import (
    BLUE_GREEN,
    PROGRESSING,
    PROMOTED,
    ROLLED_BACK,
    UNDONE,
    Figures,
    Rollout,
    RolloutSpec,
)
from mesh.control.topology import parse
from tests.support.clock import Clock

TOPOLOGY = parse(
    "services:\n  catalog:\n    versions: {v1: {}, v2: {}}\n"
    "  orders:\n    calls: {catalog: {methods: all}}\n"
)
SPEC = RolloutSpec("catalog", "v2", steps=(10, 50, 100), interval=10, max_p99_ms=200)


def figures(requests: float, errors: float = 0.0, p99: float | None = 10.0) -> Figures:
    return Figures(requests, requests / 10, errors, p99)


# -- the judgement -------------------------------------------------------------------------


def test_a_clean_window_promotes_and_a_clean_part_of_one_waits() -> None:
    assert analysis.judge(SPEC, figures(100), figures(900), True).action == analysis.PROMOTE
    assert analysis.judge(SPEC, figures(100), figures(900), False).action == analysis.WAIT


def test_a_canary_over_a_limit_and_worse_than_stable_rolls_back_at_once() -> None:
    verdict = analysis.judge(SPEC, figures(100, errors=0.2), figures(900, 0.001), False)
    assert verdict.action == analysis.ROLLBACK
    assert verdict.reason == "error rate 20.00% over the limit of 1.00% (stable 0.10%)"
    slow = analysis.judge(SPEC, figures(100, p99=450), figures(900, p99=12), False)
    assert slow.action == analysis.ROLLBACK
    assert "p99 450.0 ms over the limit of 200 ms (stable 12.0 ms)" in slow.reason


def test_a_fault_the_stable_version_shares_holds_the_step() -> None:
    verdict = analysis.judge(SPEC, figures(100, errors=0.05), figures(900, errors=0.06), True)
    assert verdict.action == analysis.HOLD
    assert "stable 6.00%" in verdict.reason


def test_too_few_calls_cannot_be_judged() -> None:
    assert analysis.judge(SPEC, figures(5, errors=1.0), None, False).action == analysis.WAIT
    verdict = analysis.judge(SPEC, figures(5, errors=1.0), None, True)
    assert verdict.action == analysis.HOLD
    assert "5 calls reached v2, fewer than the 20 needed" in verdict.reason


def test_a_canary_alone_is_judged_by_its_limits() -> None:
    assert analysis.judge(SPEC, figures(100, errors=0.5), None, False).action == analysis.ROLLBACK


# -- the split each state asks for ----------------------------------------------------------


def test_each_state_asks_for_its_split() -> None:
    rollout = Rollout(SPEC, "v1", {"v1": 100, "v2": 0})
    assert rollout.weights() == {"v1": 90, "v2": 10}
    rollout.step = 2
    assert rollout.weights() == {"v1": 0, "v2": 100}
    rollout.status = ROLLED_BACK
    assert rollout.weights() == {"v1": 100, "v2": 0}
    rollout.status = UNDONE
    assert rollout.weights() == {"v1": 100, "v2": 0}


@pytest.mark.parametrize(
    ("steps", "expected"), [((10, 50), "the last step must be 100"), ((50, 10, 100), "must grow")]
)
def test_steps_must_grow_to_every_call(steps: tuple[int, ...], expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        RolloutSpec("catalog", "v2", steps=steps)


def test_a_rollout_survives_its_json(tmp_path: Path) -> None:
    rollout = Rollout(SPEC, "v1", {"v1": 100, "v2": 0})
    rollout.decide("promote", "within every limit", canary=figures(50), stable=None)
    store.save(tmp_path, rollout)
    assert store.load(tmp_path, "catalog") == rollout
    assert store.every(tmp_path) == [rollout]


# -- the actions -------------------------------------------------------------------------------


def serving(version: str, health: str = "SERVING") -> dict[str, Any]:
    return {"service": "catalog", "version": version, "instance": f"catalog-{version}-0",
            "health": health}  # fmt: skip


def test_start_moves_the_first_step_and_undo_returns_to_the_split_before(tmp_path: Path) -> None:
    rollout = actions.start(tmp_path, TOPOLOGY, SPEC, [])
    assert routing.read_weights(routing.routing_root(tmp_path)) == {"catalog": {"v1": 90, "v2": 10}}
    assert rollout.decisions[0].reason == "10% of the calls to v2, the rest to v1"
    with pytest.raises(RolloutError, match="in progress"):
        actions.start(tmp_path, TOPOLOGY, SPEC, [])
    with pytest.raises(RolloutError, match="in progress"):
        actions.set_weights(tmp_path, TOPOLOGY, "catalog", {"v2": 100})
    actions.undo(tmp_path, TOPOLOGY, "catalog")
    assert routing.read_weights(routing.routing_root(tmp_path)) == {"catalog": {"v1": 100, "v2": 0}}
    with pytest.raises(
        RolloutError, match="nothing to undo for catalog: its last rollout was undone"
    ):
        actions.undo(tmp_path, TOPOLOGY, "catalog")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (RolloutSpec("catalog", "v3"), r"catalog has no version 'v3' \(its versions: v1, v2\)"),
        (RolloutSpec("orders", "v2"), "orders has no versions"),
        (RolloutSpec("catalog", "v1"), "v1 already takes 100% of the calls"),
    ],
)
def test_a_rollout_that_cannot_be_is_refused(
    tmp_path: Path, spec: RolloutSpec, expected: str
) -> None:
    with pytest.raises(RolloutError, match=expected):
        actions.start(tmp_path, TOPOLOGY, spec, [])


def test_blue_green_switches_only_after_the_smoke_check(tmp_path: Path) -> None:
    spec = RolloutSpec("catalog", "v2", strategy=BLUE_GREEN, steps=(100,))
    with pytest.raises(RolloutError, match="smoke check of v2 failed: catalog-v2-0 NOT_SERVING"):
        actions.start(tmp_path, TOPOLOGY, spec, [serving("v1"), serving("v2", "NOT_SERVING")])
    assert routing.read_weights(routing.routing_root(tmp_path)) == {}
    actions.start(tmp_path, TOPOLOGY, spec, [serving("v1"), serving("v2")])
    assert routing.read_weights(routing.routing_root(tmp_path)) == {"catalog": {"v1": 0, "v2": 100}}


# -- the controller ------------------------------------------------------------------------


def controller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock[float]
) -> RolloutController:
    monkeypatch.setattr("mesh.control.rollouts.controller.time.time", clock)
    said: list[str] = []
    found = RolloutController(tmp_path, TOPOLOGY, make_plan(TOPOLOGY, tmp_path), said.append)
    found.said = said  # type: ignore[attr-defined]
    return found


def feed(found: RolloutController, v1: tuple[float, float], v2: tuple[float, float]) -> None:
    """The callers' cumulative (tries, server errors) of each version, next read."""
    counts = {
        "v1": Counts(requests=v1[0], errors=v1[1], buckets={0.01: v1[0]}),
        "v2": Counts(requests=v2[0], errors=v2[1], buckets={0.01: v2[0]}),
    }
    found.read = lambda service: counts  # type: ignore[method-assign]


@pytest.fixture
def started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[RolloutController, Clock[float]]:
    """A rollout of catalog to v2 just started, and the controller that moves it on."""
    clock = Clock(1000.0)
    found = controller(tmp_path, monkeypatch, clock)
    actions.start(tmp_path, TOPOLOGY, SPEC, [])
    return found, clock


def test_a_healthy_canary_is_promoted_step_by_step(
    tmp_path: Path, started: tuple[RolloutController, Clock[float]]
) -> None:
    found, clock = started
    calls = 0.0
    for _ in range(3):
        feed(found, (calls * 9, 0), (calls, 0))
        found.tick()  # the window begins
        calls += 100
        clock.now += SPEC.interval
        feed(found, (calls * 9, 0), (calls, 0))
        found.tick()
    rollout = store.load(tmp_path, "catalog")
    assert rollout is not None
    assert rollout.status == PROMOTED
    assert [d.action for d in rollout.decisions] == ["start", "promote", "promote", "promote"]
    assert routing.read_weights(routing.routing_root(tmp_path)) == {"catalog": {"v1": 0, "v2": 100}}
    assert "rollout of catalog to v2: promote, v2 now 50%" in found.said[0]  # type: ignore[attr-defined]


def test_a_failing_canary_is_rolled_back_mid_window(
    tmp_path: Path, started: tuple[RolloutController, Clock[float]]
) -> None:
    found, clock = started
    feed(found, (0, 0), (0, 0))
    found.tick()
    clock.now += 2.5  # a quarter of the window
    feed(found, (900, 0), (100, 20))
    found.tick()
    rollout = store.load(tmp_path, "catalog")
    assert rollout is not None
    assert rollout.status == ROLLED_BACK
    decision = rollout.decisions[-1]
    assert decision.action == "rollback"
    assert decision.canary == Figures(100, 40.0, 0.2, 9.9)
    assert decision.stable == Figures(900, 360.0, 0.0, 9.9)
    assert routing.read_weights(routing.routing_root(tmp_path)) == {"catalog": {"v1": 100, "v2": 0}}
    clock.now += 100
    found.tick()  # an ended rollout is left alone
    assert store.load(tmp_path, "catalog") == rollout
    assert rollout.status != PROGRESSING


@pytest.mark.parametrize("service", ["../../etc/passwd", "orders", "nobody"])
def test_undo_and_weights_name_only_services_with_versions(tmp_path: Path, service: str) -> None:
    with pytest.raises(RolloutError, match=r"no service|has no versions"):
        actions.undo(tmp_path, TOPOLOGY, service)
    with pytest.raises(RolloutError, match=r"no service|has no versions"):
        actions.set_weights(tmp_path, TOPOLOGY, service, {"v1": 100})
    assert not (tmp_path / store.ROLLOUTS_DIR).exists()


def test_a_rollout_file_changed_by_hand_is_named(tmp_path: Path) -> None:
    path = store.path_of(tmp_path, "catalog")
    path.parent.mkdir()
    path.write_text('{"spec": {}}')
    with pytest.raises(store.UnreadableRollout, match=r"catalog\.json cannot be read as a rollout"):
        store.load(tmp_path, "catalog")


def test_a_versions_sidecar_counts_server_errors_not_the_clients_mistakes() -> None:
    text = "\n".join(
        [
            "# TYPE envoy_cluster_grpc_total counter",
            'envoy_cluster_grpc_total{envoy_cluster_name="local_app"} 10',
            "# TYPE envoy_cluster_grpc_14 counter",  # UNAVAILABLE
            'envoy_cluster_grpc_14{envoy_cluster_name="local_app"} 3',
            "# TYPE envoy_cluster_grpc_5 counter",  # NOT_FOUND: the client's
            'envoy_cluster_grpc_5{envoy_cluster_name="local_app"} 4',
            "# TYPE envoy_cluster_grpc_total counter",
            'envoy_cluster_grpc_total{envoy_cluster_name="catalog"} 99',  # not what it received
            "# TYPE envoy_cluster_upstream_rq_time histogram",
            'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="local_app",le="5"} 6',
            'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="local_app",le="+Inf"} 7',
            'envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="local_app"} 20',
            'envoy_cluster_upstream_rq_time_count{envoy_cluster_name="local_app"} 7',
        ]
    )
    found = served_counts(text + "\n")
    assert (found.requests, found.errors) == (10, 3)
    assert found.buckets == {0.005: 6, float("inf"): 7}
