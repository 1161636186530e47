"""Apps forked from the preloaded app server (`mesh.control.apps`): each is what
`python -m` would have made it, seen by the supervisor as any other child."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.control.apps import AppForker, stop_forkserver
from mesh.control.process import ManagedProcess
from mesh.control.procstat import children
from tests.support.processes import niceness_of_every_thread
from tests.support.wait import wait_until

APP = "tests.support.forked_app"


@pytest.fixture(scope="module")
def forker() -> Iterator[AppForker]:
    """A forker whose server and resource tracker are stopped, by pid, at the end."""
    before = set(children(os.getpid()))
    forker = AppForker()
    forker.warm()
    helpers = sorted(set(children(os.getpid())) - before)
    assert len(helpers) == 2  # the forkserver and its resource tracker
    try:
        yield forker
    finally:
        stop_forkserver(helpers)


def _app(forker: AppForker, tmp_path: Path, mode: str, niceness: int = 0) -> ManagedProcess:
    return ManagedProcess(
        "forked", ["python", "-m", APP, mode], tmp_path / "logs" / "forked.log",
        {"FORKED_APP_MARKER": "42"}, forker=forker, niceness=niceness,
    )  # fmt: skip


def _log(process: ManagedProcess) -> str:
    return process.log_path.read_text()


@pytest.mark.parametrize("niceness", [0, 10])
def test_a_forked_app_is_what_python_m_makes_it(
    forker: AppForker, tmp_path: Path, niceness: int
) -> None:
    process = _app(forker, tmp_path, "serve", niceness)
    process.start(tmp_path)
    try:
        assert process.pid is not None
        wait_until(lambda: "started" in _log(process), "the app's start", 20, 0.02)
        assert f"argv=['serve'] cwd={tmp_path} marker=42" in _log(process)
        title = Path(f"/proc/{process.pid}/cmdline").read_bytes().replace(b"\0", b" ")
        assert title.strip() == f"python -m {APP} serve".encode()
        assert niceness_of_every_thread(process.pid) == {
            os.getpriority(os.PRIO_PROCESS, 0) + niceness
        }
        assert len(list(Path(f"/proc/{process.pid}/task").iterdir())) >= 2
    finally:
        process.terminate()
        process.wait_or_kill(time.monotonic() + 10)
    assert process.process is not None
    assert process.process.returncode == -signal.SIGTERM


def test_a_forked_app_ends_with_its_exit_code_after_its_exit_handlers(
    forker: AppForker, tmp_path: Path
) -> None:
    log = tmp_path / "logs" / "forked.log"
    log.parent.mkdir()
    log.write_text("RuntimeError: the error of an earlier run\n")
    process = _app(forker, tmp_path, "exit")
    process.start(tmp_path)
    try:
        assert process.process is not None
        assert process.process.wait(timeout=30) == 1
        assert process.exited() == 1
        assert _log(process).count("exit handler ran") == 1
        assert process.last_error_line() == "forked_app: asked to exit"
        assert _log(process).startswith("RuntimeError: the error of an earlier run")
    finally:
        process.wait_or_kill(time.monotonic() + 10)


def test_waiting_for_a_forked_app_that_runs_on_times_out(forker: AppForker, tmp_path: Path) -> None:
    process = _app(forker, tmp_path, "serve")
    process.start(tmp_path)
    try:
        assert process.process is not None
        with pytest.raises(subprocess.TimeoutExpired):
            process.process.wait(timeout=0.2)
        assert process.exited() is None
    finally:
        process.wait_or_kill(time.monotonic())  # kills at once: the deadline has passed
    assert process.process.returncode == -signal.SIGKILL
