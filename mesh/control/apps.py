"""The mesh's Python processes, forked from one Python that has already imported what
they share: the services' apps, and the trace store, the console and the edge's
companion.

Every app imports the same runtime (`mesh.runtime.service`: gRPC, SQLAlchemy, NATS,
OpenTelemetry, Prometheus): about 0.4 s of CPU each, most of an app's start. Started as
`python -m services.<name>`, eight apps paid it eight times over, on a two-core machine
the better part of the mesh's start. Here one server process (multiprocessing's
forkserver, `PRELOADED` imported once) forks each of them, which then imports only its
own modules; the pages of the shared modules stay shared between them until written.

Forking is safe because nothing preloaded has started a thread or used gRPC: gRPC
supports a fork after `import grpc` as long as no channel, server or call exists yet,
and the server imports modules only. An app is otherwise what `python -m` made it: its
own log on stdout and stderr, its environment, working directory and niceness, a
process title that reads `python -m services.<name> --port ...` in `ps`, its exit
handlers run when it ends, and its exit code (or signal) what the supervisor sees.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import runpy
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from pathlib import Path

#: What every app imports, imported once by the server the apps are forked from.
PRELOADED = ("mesh.runtime.service",)


@dataclass(frozen=True)
class AppLaunch:
    """What `python -m` would be given: the module, its arguments, and the process's
    surroundings."""

    module: str
    args: tuple[str, ...]
    cwd: Path
    env: dict[str, str]
    log_path: Path
    niceness: int = 0

    @property
    def title(self) -> str:
        return " ".join(["python", "-m", self.module, *self.args])


class AppForker:
    """The forkserver the apps of one mesh are forked from (started on first use)."""

    def __init__(self) -> None:
        self._context: ForkServerContext = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(list(PRELOADED))

    def warm(self) -> None:
        """Start the server now, so that its imports overlap with other work."""
        from multiprocessing import forkserver

        forkserver.ensure_running()

    def start(self, launch: AppLaunch) -> ForkedApp:
        process = self._context.Process(target=run_app, args=(launch,), name=launch.title)
        process.daemon = True  # should the supervisor itself fail, its apps end with it
        process.start()
        return ForkedApp(process)


class ForkedApp:
    """A forked app, through the part of `subprocess.Popen`'s interface the supervisor
    uses."""

    def __init__(self, process: BaseProcess) -> None:
        self._process = process

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def send_signal(self, signum: int) -> None:
        if self._process.exitcode is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(self._process.name, timeout or 0.0)
        return self._process.exitcode


def stop_forkserver(pids: Sequence[int]) -> None:
    """Stop the forkserver and its resource tracker (the processes `AppForker.warm`
    started, found by pid), once no app forked from them runs. SIGKILL: neither holds
    anything to save, and the tracker ignores SIGTERM."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def run_app(launch: AppLaunch) -> None:
    """In the forked process: become `python -m <module> <args>`, run it, and run its
    exit handlers (the forkserver ends its children with `os._exit`, which skips them:
    the tracer's last spans and the logs' last lines are flushed there)."""
    _become(launch)
    try:
        runpy.run_module(launch.module, run_name="__main__", alter_sys=True)
    finally:
        atexit._run_exitfuncs()


def _become(launch: AppLaunch) -> None:
    import setproctitle

    setproctitle.setproctitle(launch.title)
    if launch.niceness:
        os.nice(launch.niceness)  # before any thread, so that every thread inherits it
    os.chdir(launch.cwd)
    os.environ.update(launch.env)
    sys.argv = [launch.module, *launch.args]
    _redirect_output(launch.log_path)


def _redirect_output(log_path: Path) -> None:
    """Stdout and stderr to the end of `log_path`, as the supervisor's other children."""
    sys.stdout.flush()
    sys.stderr.flush()
    descriptor = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    for standard in (1, 2):
        os.dup2(descriptor, standard)
    os.close(descriptor)


def module_arguments(argv: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """`-m`'s module and the arguments after it, from `[python, -m, module, *args]`."""
    if len(argv) < 3 or argv[1] != "-m":
        raise ValueError(f"not a `python -m` command line: {list(argv)}")
    return argv[2], tuple(argv[3:])
