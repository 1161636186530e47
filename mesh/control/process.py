"""The processes of a local mesh: each child the supervisor keeps running, each instance's
app and sidecar, and the privacy of everything they write.

A child that exits is started again after a backoff (as a Kubernetes restart policy
would): 0.5 s, doubling up to `MAX_BACKOFF_SECONDS`, and back to 0.5 s for a process that
had run for `STABLE_SECONDS`.

Each child's output is appended to its log, run after run; a process knows where this
run's output begins (`log_start`), and which of its lines said what went wrong
(`last_error_line`), so a failure can be told in the child's own words.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from mesh.control.apps import AppForker, AppLaunch, module_arguments
from mesh.control.plan import InstancePlan
from mesh.runtime import telemetry

#: Restart backoff: 0.5 s, doubling, at most this long.
MAX_BACKOFF_SECONDS = 30.0
#: A process that ran this long before exiting restarts with the shortest backoff again.
STABLE_SECONDS = 60.0

#: The umask of the supervisor, and so of every process it starts: what they create is
#: their owner's only (files 0600, directories 0700, sockets 0700 before Envoy's chmod).
PRIVATE_UMASK = 0o077
#: The mode of the run directory.
RUN_DIR_MODE = 0o700

#: A line that says something went wrong, in the words of the mesh's children: Envoy's
#: levels (`[time][pid][critical][main] ...`), NATS's (`[pid] time [FTL] ...`), the last
#: line of a Python traceback (`OSError: ...`, `sqlalchemy.exc.OperationalError: ...`) and
#: a command line's complaint (`prog: error: ...`).
_ERROR_LINE = re.compile(
    r"\]\[(critical|error)\]\[|\[(FTL|ERR)\] |^[\w.]*(Error|Exception)\b|\berror: ",
    re.IGNORECASE,
)
#: Lines at an error level that never say why: deprecation warnings, and the stack
#: Envoy prints after the assertion that stopped it.
_NOT_A_REASON = re.compile(r"deprecat|\]\[backtrace\] |\] #\d+\b|stacktrace for", re.IGNORECASE)
#: How much of a log's end is read for its last error line.
_LOG_TAIL_BYTES = 64 * 1024


def make_private(run_dir: Path) -> None:
    """From now on, create everything owner-only (umask 0o077), and make `run_dir` 0700.

    Why: the run directory holds the shop's customer data. The services' SQLite files
    hold customers, orders, payments and password hashes; `traces/traces.db` holds spans
    whose attributes carry customer and order ids; the logs name them too; NATS's store
    holds every event of the saga; `pki/` holds the private keys. Under a usual umask
    (0o022) every one of those that is not created with an explicit mode would be
    readable by every user of the machine. Setting the umask here, in the process that
    creates the run directory and starts every other process of the mesh, before it
    creates anything, covers every file whoever creates it (the supervisor's logs and
    state, Envoy's configurations and sockets, NATS's store, the trace store's database,
    what the apps write), since children inherit the umask; no file has to remember.

    mkdir's mode is filtered by the umask and ignored for an existing directory, so the
    run directory's mode is set explicitly, and what an earlier mesh (from before this
    umask) left in it loses every group and other permission the same way. (Certificates
    are the one exception the PKI makes on purpose: public, 0644, in 0700 directories.)
    """
    os.umask(PRIVATE_UMASK)
    run_dir.mkdir(mode=RUN_DIR_MODE, parents=True, exist_ok=True)
    os.chmod(run_dir, RUN_DIR_MODE)
    for directory, names, files in os.walk(run_dir):
        for name in [*names, *files]:
            path = os.path.join(directory, name)
            with contextlib.suppress(FileNotFoundError):
                mode = os.lstat(path).st_mode
                if not stat.S_ISLNK(mode) and stat.S_IMODE(mode) & 0o077:
                    os.chmod(path, stat.S_IMODE(mode) & ~0o077)


class Child(Protocol):
    """A started process, run (`subprocess.Popen`) or forked (`ForkedApp`)."""

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int | None: ...
    def poll(self) -> int | None: ...
    def send_signal(self, signum: int, /) -> None: ...
    def kill(self) -> None: ...
    def wait(self, timeout: float | None = None) -> int: ...


@dataclass
class ManagedProcess:
    """A child process the supervisor keeps running."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    forker: AppForker | None = None
    """Where the process is forked from instead of run, when `argv` is
    `python -m <module> ...` (`mesh.control.apps`)."""
    process: Child | None = None
    restarts: int = 0
    last_exit: int | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    backoff: float = 0.5
    niceness: int = 0
    """Added to the process's niceness (`nice`): what it gets of a CPU others want too."""
    log_start: int | None = None
    """Where in its log the output of this supervisor's run begins (the log is appended
    to across runs); set at the first start."""
    _log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self, cwd: Path) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self._log is None:
            self._log = self.log_path.open("ab")
        if self.log_start is None:
            self.log_start = os.fstat(self._log.fileno()).st_size
        self.process = self._fork(cwd) if self.forker is not None else self._run(cwd)
        self.started_at = time.monotonic()
        self.restart_at = None

    def _run(self, cwd: Path) -> Child:
        # Through nice(1), so every thread the process starts inherits its niceness.
        niced = ["nice", "-n", str(self.niceness)] if self.niceness else []
        return subprocess.Popen(
            [*niced, *self.argv],
            cwd=cwd,
            env={**os.environ, **self.env},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def _fork(self, cwd: Path) -> Child:
        assert self.forker is not None
        module, args = module_arguments(self.argv)
        return self.forker.start(
            AppLaunch(module, args, cwd, self.env, self.log_path, self.niceness)
        )

    def last_error_line(self) -> str | None:
        """The last line of this run's output that says what went wrong (see
        `last_error_line`), or None when there is no output."""
        start = self.log_start or 0
        try:
            with self.log_path.open("rb") as log:
                log.seek(max(start, log.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
                return last_error_line(log.read().decode(errors="replace"))
        except OSError:
            return None

    def exited(self) -> int | None:
        """The exit code if the process has ended (and was not yet noticed), else None."""
        if self.process is None or self.restart_at is not None:
            return None
        return self.process.poll()

    def schedule_restart(self, now: float) -> float:
        """Plan the next start after a backoff; return the delay."""
        assert self.process is not None
        self.last_exit = self.process.returncode
        if now - self.started_at >= STABLE_SECONDS:
            self.backoff = 0.5
        delay = self.backoff
        self.backoff = min(self.backoff * 2, MAX_BACKOFF_SECONDS)
        self.restart_at = now + delay
        return delay

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait_or_kill(self, deadline: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def last_error_line(output: str) -> str | None:
    """The line of `output` a person needs to see when its process failed: the last one
    that says an error (`_ERROR_LINE`, or a JSON log line at ERROR or CRITICAL), else the
    last line, since a process that exits with a message (`SystemExit`) prints just that.
    Deprecation warnings and Envoy's backtraces are never the reason (`_NOT_A_REASON`)."""
    lines = [
        line.strip()
        for line in output.splitlines()
        if line.strip() and not _NOT_A_REASON.search(line)
    ]
    for line in reversed(lines):
        if _ERROR_LINE.search(line) or _json_error(line) is not None:
            return _json_error(line) or line
    return lines[-1] if lines else None


def _json_error(line: str) -> str | None:
    """The level and message of an app's JSON log line at ERROR or CRITICAL."""
    fields = telemetry.parse_log_line(line) if line.startswith("{") else None
    if fields is None or fields.get("level") not in ("ERROR", "CRITICAL"):
        return None
    return f"{fields['level']} {fields.get('message', '')}"


@dataclass
class Instance:
    """One instance of a service: its app and the sidecar that speaks for it."""

    plan: InstancePlan
    app: ManagedProcess
    sidecar: ManagedProcess

    @property
    def started_at(self) -> float:
        return max(self.app.started_at, self.sidecar.started_at)


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as proc_stat:
            return proc_stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
