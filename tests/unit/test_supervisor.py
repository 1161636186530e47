"""The supervisor's bookkeeping while it tends a mesh: whose turn, and what health says."""

from __future__ import annotations

import math
import os
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from mesh.control.local import status_table
from mesh.control.plan import InstancePlan
from mesh.control.process import Instance, ManagedProcess
from mesh.control.state import Probed, health
from mesh.control.supervisor import in_turn
from tests.support.processes import niceness_of_every_thread
from tests.support.wait import wait_until


@pytest.mark.parametrize("count", [1, 7, 8, 9, 20])
def test_each_instance_has_its_turn_once_an_interval_and_few_share_a_wake(count: int) -> None:
    slots = 8
    items = list(range(count))
    for first in (0, 3, 13):
        wakes = [in_turn(items, wake, slots) for wake in range(first, first + slots)]
        assert Counter(item for wake in wakes for item in wake) == Counter(items)
        assert max(len(wake) for wake in wakes) == math.ceil(count / slots)


def instance(started_at: float, restart_at: float | None = None) -> Instance:
    def process(name: str) -> ManagedProcess:
        return ManagedProcess(name, ["true"], Path(f"{name}.log"), started_at=started_at)

    plan = InstancePlan("catalog", 0, 1, 2, "admin.sock")
    made = Instance(plan, process("app"), process("sidecar"))
    made.app.restart_at = restart_at
    return made


def test_health_is_what_the_last_probe_since_the_start_found() -> None:
    assert health(instance(started_at=10.0), Probed(True, at=11.0)) == "SERVING"
    assert health(instance(started_at=10.0), Probed(False, at=11.0)) == "NOT_SERVING"


def test_a_probe_from_before_a_restart_says_nothing_of_the_restarted_instance() -> None:
    assert health(instance(started_at=10.0), Probed(True, at=9.0)) == "UNKNOWN"
    assert health(instance(started_at=10.0), None) == "UNKNOWN"


def test_an_instance_waiting_to_restart_is_restarting_whatever_was_probed() -> None:
    assert health(instance(started_at=10.0, restart_at=12.0), Probed(True, at=11.0)) == "RESTARTING"


@pytest.mark.parametrize("niceness", [0, 10])
def test_a_process_and_every_thread_it_starts_run_at_its_niceness(
    tmp_path: Path, niceness: int
) -> None:
    threads = "import threading, time; threading.Thread(target=time.sleep, args=(30,)).start()"
    process = ManagedProcess(
        "threads", [sys.executable, "-c", f"{threads}; time.sleep(30)"], tmp_path / "log",
        niceness=niceness,
    )  # fmt: skip
    process.start(tmp_path)
    try:
        assert process.pid is not None
        tasks = Path(f"/proc/{process.pid}/task")
        wait_until(lambda: len(list(tasks.iterdir())) >= 2, "the process's thread", 10, 0.02)
        assert niceness_of_every_thread(process.pid) == {
            os.getpriority(os.PRIO_PROCESS, 0) + niceness
        }
    finally:
        process.terminate()
        process.wait_or_kill(time.monotonic() + 5)


def _state(degraded: list[str]) -> dict[str, object]:
    one = {"service": "orders", "instance": "orders-0", "app_pid": 1, "sidecar_pid": 2,
           "app_port": 3, "inbound_port": 4, "health": "SERVING", "restarts": 0,
           "degraded": degraded}  # fmt: skip
    return {"instances": [one], "nats": {"url": "tls://127.0.0.1:5", "monitor": 6, "pid": 7}}


def test_status_marks_an_instance_degraded_and_says_why() -> None:
    stuck = status_table(_state(["the oldest event in its outbox has waited 45 s"]))
    assert "SERVING, DEGRADED" in stuck
    assert "degraded: orders-0: the oldest event in its outbox has waited 45 s" in stuck
    fine = status_table(_state([]))
    assert "DEGRADED" not in fine
    assert "degraded:" not in fine
