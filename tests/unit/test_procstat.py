"""Reading a process's CPU time and memory from /proc."""

from __future__ import annotations

import os
import subprocess
import sys

from mesh.control import procstat


def test_cpu_time_is_counted_from_the_last_parenthesis() -> None:
    ticks = procstat.CLOCK_TICKS_PER_SECOND
    fields = ["S", *["0"] * 10, str(3 * ticks), str(ticks), *["0"] * 30]
    stat = f"4242 (wrk:worker (0) x) {' '.join(fields)}"
    assert procstat.cpu_seconds_of(stat) == 4.0


def test_a_running_process_has_cpu_time_and_memory() -> None:
    mine = procstat.usage(os.getpid())
    assert mine is not None
    assert mine.cpu_seconds > 0
    assert 0 < mine.anon_kib <= mine.rss_kib <= mine.peak_kib
    assert procstat.rss_kib(os.getpid()) > 0


def test_cpu_time_counts_every_thread_of_the_process() -> None:
    """A child burns 0.3 s of CPU in a second thread (by that thread's own clock): the
    process's total grows by about as much (ticks are 10 ms)."""
    child = subprocess.run(
        [
            sys.executable, "-c",
            "import os, sys, threading, time\n"
            "sys.path.insert(0, os.getcwd())\n"
            "from mesh.control import procstat\n"
            "before = procstat.usage(os.getpid()).cpu_seconds\n"
            "def burn():\n"
            "    while time.thread_time() < 0.3: pass\n"
            "worker = threading.Thread(target=burn); worker.start(); worker.join()\n"
            "print(procstat.usage(os.getpid()).cpu_seconds - before)\n",
        ],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert float(child.stdout) >= 0.25


def test_a_process_that_is_not_running_has_no_usage() -> None:
    never = 2**22 + 7  # above Linux's largest pid
    assert procstat.usage(None) is None
    assert procstat.usage(never) is None
    assert procstat.rss_kib(never) == 0
