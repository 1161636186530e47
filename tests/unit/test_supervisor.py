"""The supervisor's bookkeeping while it tends a mesh: whose turn, what health says, what
its memory is, and which line of a failed process's log says why it failed."""

from __future__ import annotations

import math
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mesh.control.local import status_table
from mesh.control.plan import InstancePlan
from mesh.control.process import Instance, ManagedProcess, last_error_line
from mesh.control.state import Probed, all_pids, health, memory_pss_kib
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


def _state(degraded: list[str]) -> dict[str, Any]:
    one = {"service": "orders", "instance": "orders-0", "app_pid": 1, "sidecar_pid": 2,
           "app_port": 3, "inbound_port": 4, "health": "SERVING", "restarts": 0,
           "degraded": degraded, "app_pss_kib": 60 << 10, "sidecar_pss_kib": 20 << 10}  # fmt: skip
    return {
        "instances": [one],
        "nats": {"url": "tls://127.0.0.1:5", "pid": 7, "pss_kib": 10 << 10},
        "traces": {"endpoint": "127.0.0.1:8", "pid": 9, "pss_kib": 30 << 10},
        "edge": None,
        "forkserver": {"pids": [11, 12], "pss_kib": 15 << 10},
        "console": {"url": "http://127.0.0.1:14/?token=t", "pid": 13, "pss_kib": 5 << 10},
        "supervisor_pss_kib": 40 << 10,
    }


def test_status_marks_an_instance_degraded_and_says_why() -> None:
    stuck = status_table(_state(["the oldest event in its outbox has waited 45 s"]))
    assert "SERVING, DEGRADED" in stuck
    assert "degraded: orders-0: the oldest event in its outbox has waited 45 s" in stuck
    fine = status_table(_state([]))
    assert "DEGRADED" not in fine
    assert "degraded:" not in fine


def test_status_gives_each_consumers_lag() -> None:
    state = _state([])
    assert "events waiting" not in status_table(state)
    state["instances"][0]["events_waiting"] = {"orders_rebuild": 120.0, "orders": 0.0}
    assert "events waiting: orders-0: orders 0, orders_rebuild 120" in status_table(state)


def test_status_gives_the_meshs_memory_as_the_sum_of_its_processes_pss() -> None:
    state = _state([])
    state["memory_pss_kib"] = memory_pss_kib(state)
    assert state["memory_pss_kib"]["total"] == 180 << 10
    memory = [line for line in status_table(state).splitlines() if line.startswith("memory:")]
    assert memory == [
        "memory: 180 MiB PSS, shared pages counted once (apps 60, sidecars 20, edge 0,"
        " forkserver 15, nats 10, traces 30, console 5, supervisor 40)"
    ]


def test_the_forkserver_and_the_console_are_among_the_processes_down_stops() -> None:
    state = _state([])
    assert {11, 12, 13} <= set(all_pids(state))


def test_status_gives_the_consoles_url() -> None:
    lines = status_table(_state([])).splitlines()
    assert [line for line in lines if line.startswith("console:")] == [
        "console: http://127.0.0.1:14/?token=t (service map, traces; pid 13;"
        " the token is this mesh's, keep it to yourself)"
    ]


def _edge(**fields: Any) -> dict[str, Any]:
    return {"url": "http://127.0.0.1:8080", "pid": 15, "admin_socket": "", **fields}


def test_status_gives_the_https_url_and_the_ca_clients_trust() -> None:
    ca = str(Path.cwd() / ".mesh" / "pki" / "ca" / "ca.pem")
    mesh_ca = {**_state([]), "edge": _edge(https_url="https://127.0.0.1:8443", ca=ca)}
    lines = status_table(mesh_ca).splitlines()
    assert [line for line in lines if line.startswith("edge https:")] == [
        "edge https: https://127.0.0.1:8443 (REST and gRPC over TLS; the mesh CA vouches for"
        " it: `curl --cacert .mesh/pki/ca/ca.pem https://127.0.0.1:8443/v1/products`)"
    ]
    own = {**_state([]), "edge": _edge(https_url="https://127.0.0.1:8443", ca=None)}
    assert "with your certificate" in status_table(own)
    redirect = _edge(
        url="https://127.0.0.1:8443",
        https_url="https://127.0.0.1:8443",
        http="redirect",
        http_url="http://127.0.0.1:8080",
    )
    lines = status_table({**_state([]), "edge": redirect}).splitlines()
    told = [line for line in lines if line.startswith(("edge:", "edge http:"))]
    assert told[0].startswith("edge: https://127.0.0.1:8443 (REST and gRPC")
    assert told[1].startswith("edge http: http://127.0.0.1:8080 redirects to HTTPS (308")
    assert "edge https:" not in status_table({**_state([]), "edge": _edge()})


#: What Envoy 1.40 wrote when its inbound port was taken, and when it could not watch its
#: certificates' directory (too many inotify instances on the machine): it aborted, with
#: a backtrace at error level after the reason.
ENVOY_BIND_FAILURE = (
    "[2026-12-06 23:17:43.713][28047][error][config] [source/common/listener_manager/"
    "listener_manager_impl.cc:1405] listener 'inbound' failed to bind or apply socket "
    "options: cannot bind '127.0.0.1:38083': Address already in use\n"
    "[2026-12-06 23:17:43.749][28047][critical][main] [source/server/server.cc:449] error "
    "`cannot bind '127.0.0.1:38083': Address already in use` initializing config "
    "'goo.gle/debugproto  \n  /tmp/tmpm7y4kt3k/envoy.yaml'\n"
    "cannot bind '127.0.0.1:38083': Address already in use\n"
)
ENVOY_ABORT = (
    "[2026-12-06 23:16:38.848][18638][critical][assert] [source/common/filesystem/inotify/"
    "watcher_impl.cc:25] assert failure: inotify_fd_ >= 0. Details: Consider increasing value"
    " of fs.inotify.max_user_watches and/or fs.inotify.max_user_instances via sysctl\n"
    "[2026-12-06 23:16:38.848][18638][error][envoy_bug] [./source/common/common/assert.h:60]"
    " stacktrace for envoy bug\n"
    "[2026-12-06 23:16:38.857][18638][error][envoy_bug] [./source/common/common/assert.h:66]"
    " #0 UNKNOWN [0x55d12d42122c]\n"
    "[2026-12-06 23:16:38.857][18638][critical][backtrace] [./source/server/backtrace.h:173]"
    " Caught Aborted, suspect faulting address 0x48ce\n"
    "[2026-12-06 23:16:38.857][18638][critical][backtrace] [./source/server/backtrace.h:167]"
    " #0: [0x7f0101aff050]\n"
)
ENVOY_DEPRECATION = (
    "[2026-12-06 23:20:01.101][4242][warning][misc] [source/common/protobuf/"
    "message_validator_impl.cc:23] Deprecated field: type envoy.config.route.v3.RouteAction"
    " Using deprecated option 'envoy.config.route.v3.RouteAction.max_grpc_timeout'\n"
)

PYTHON_TRACEBACK = """\
{"time": "2026-12-06T23:20:01.1Z", "level": "INFO", "logger": "mesh", "message": "starting"}
Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
  File "/work/main/mesh/runtime/storage/database.py", line 80, in open
    await connection.run_sync(self._migrate)
sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) unable to open database file
(Background on this error at: https://sqlalche.me/e/20/e3q8)
"""


@pytest.mark.parametrize(
    ("output", "quoted"),
    [
        (ENVOY_BIND_FAILURE, "[critical][main] [source/server/server.cc:449] error `cannot bind"),
        (ENVOY_ABORT, "assert failure: inotify_fd_ >= 0. Details: Consider increasing"),
        (ENVOY_BIND_FAILURE + ENVOY_DEPRECATION, "error `cannot bind '127.0.0.1:38083'"),
        (PYTHON_TRACEBACK, "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) unable"),
        (
            '{"level": "CRITICAL", "logger": "mesh", "message": "event bus stopped: refused"}\n',
            "CRITICAL event bus stopped: refused",
        ),
        ("[77] 2026/12/06 23:20:01 [FTL] Error listening on port: 4222\n", "[FTL] Error listening"),
        ("catalog: calls inventory: set SHOP_INVENTORY_ADDRESS=host:port\n", "set SHOP_INVENTORY"),
        (
            "usage: python -m services.catalog\nservices.catalog: error: argument --port\n",
            "error: argument --port",
        ),
    ],
)
def test_a_failed_process_is_quoted_by_its_own_error_line(output: str, quoted: str) -> None:
    line = last_error_line(output)
    assert line is not None
    assert quoted in line
    assert "eprecated" not in line
    assert "backtrace" not in line


def test_a_process_without_output_has_nothing_to_quote() -> None:
    assert last_error_line("") is None
    assert last_error_line("\n  \n") is None


def test_only_this_runs_output_is_quoted(tmp_path: Path) -> None:
    """The log is appended to run after run: an earlier run's error is not this one's."""
    log = tmp_path / "app.log"
    log.write_text("RuntimeError: the error of an earlier run\n")
    process = ManagedProcess(
        "app", [sys.executable, "-c", "raise SystemExit('catalog: no port')"], log
    )
    process.start(tmp_path)
    assert process.process is not None
    process.process.wait(timeout=30)
    assert process.last_error_line() == "catalog: no port"
    assert log.read_text().startswith("RuntimeError: the error of an earlier run")
    process.wait_or_kill(time.monotonic() + 5)
