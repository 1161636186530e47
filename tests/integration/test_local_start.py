"""Starting a local mesh as a user does, with `meshctl up`: what the terminal says.

In the foreground, one line for each part of the mesh as it becomes healthy, with its
time since the start, then the logs of this run only. When a process fails to start, the
error names it and quotes its own last error line. Each test runs a mesh of its own and
stops every process it ran by pid.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mesh.control import envoy
from mesh.control.binaries import find_binary
from mesh.control.process import ManagedProcess, pid_alive
from mesh.control.state import all_pids
from tests.support.mesh import FREE_EDGE_PORTS, ROOT
from tests.support.sidecar import sidecar_config
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

HEALTHY = re.compile(r"^meshctl \| (\S+) healthy in (\d+\.\d) s$")
#: A line an earlier run left in catalog-0's log, which this run must not show.
EARLIER = '{"level": "INFO", "logger": "earlier", "message": "a line of an earlier run"}\n'


class Terminal:
    """The lines a process writes to its stdout, as they come."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._process = process
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def until(self, pattern: str, within: float) -> str:
        """Read lines until one matches `pattern`; that line."""
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r} within {within}s:\n" + self.text)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def stop_every_process(run_dir: Path) -> list[int]:
    """Kill by pid whatever of the mesh at `run_dir` still runs; return those pids."""
    try:
        pids = all_pids(json.loads((run_dir / "state.json").read_text()))
    except FileNotFoundError:
        return []
    survivors = [pid for pid in pids if pid_alive(pid)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    return survivors


@contextmanager
def foreground_up(run_dir: Path) -> Iterator[Terminal]:
    """`meshctl up` in the foreground (the edge on free ports), stopped with SIGINT."""
    up = subprocess.Popen(
        [find_binary("meshctl"), "up", "--run-dir", str(run_dir), *FREE_EDGE_PORTS],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        yield Terminal(up)
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=60)
        finally:
            if up.poll() is None:
                up.kill()
                up.wait()
            survivors = stop_every_process(run_dir)
            assert up.stdout is not None
            up.stdout.close()
        assert survivors == [], f"processes outlived the foreground mesh: {survivors}"


def test_up_in_the_foreground_says_when_each_part_is_healthy_then_shows_this_run(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "logs" / "catalog-0.log").write_text(EARLIER)
    with foreground_up(run_dir) as terminal:
        terminal.until("^ready; Ctrl-C stops the mesh$", within=120)
        state = json.loads((run_dir / "state.json").read_text())
        # Then the apps' logs stream, catalog's among them.
        terminal.until(r"^catalog-0 +\| ", within=30)
    healthy = [m.groups() for m in map(HEALTHY.match, terminal.lines) if m]
    names = [name for name, _ in healthy]
    instances = [i["instance"] for i in state["instances"]]
    assert sorted(names) == sorted([*instances, "nats", "traces", "edge", "console"]), terminal.text
    seconds = [float(after) for _, after in healthy]
    assert seconds == sorted(seconds), "each part is announced as it becomes healthy"
    assert seconds[-1] <= state["ready_seconds"] + 0.1
    assert "a line of an earlier run" not in terminal.text


def test_an_app_that_exits_while_starting_is_named_and_quoted_in_the_terminal(
    tmp_path: Path,
) -> None:
    """catalog's app is given a database URL no driver serves: it exits at once, and
    `meshctl up` says so with the app's own error line, then stops the rest."""
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [find_binary("meshctl"), "up", "--detach", "--run-dir", str(run_dir), *FREE_EDGE_PORTS],
        capture_output=True, text=True, timeout=240, check=False, cwd=ROOT,
        env={**os.environ, "SHOP_CATALOG_DATABASE_URL": "nosuchdb://catalog"},
    )  # fmt: skip
    survivors = stop_every_process(run_dir)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "catalog-0 exited with 1 while starting: " in result.stderr
    assert "NoSuchModuleError: Can't load plugin: sqlalchemy.dialects:nosuchdb" in result.stderr
    assert f"its log: {run_dir.resolve()}/logs/catalog-0.log" in result.stderr
    assert "Traceback" not in result.stderr
    assert survivors == [], f"processes outlived the failed start: {survivors}"


def test_an_envoy_that_cannot_listen_is_quoted_by_its_own_error_line(tmp_path: Path) -> None:
    """A sidecar whose inbound port another process holds: its error line names the port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        _, config = sidecar_config(tmp_path, inbound_port=port)
        sidecar = ManagedProcess("catalog-0-sidecar", envoy.command(config), tmp_path / "e.log")
        sidecar.start(tmp_path)
        try:
            wait_until(lambda: sidecar.exited() is not None, "the sidecar exits", 30, 0.05)
        finally:
            sidecar.terminate()
            sidecar.wait_or_kill(time.monotonic() + 10)
    line = sidecar.last_error_line()
    assert line is not None
    assert f"127.0.0.1:{port}" in line
    assert "Address already in use" in line
