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
    assert 0 < procstat.pss_kib(os.getpid()) <= mine.rss_kib


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
    assert procstat.pss_kib(None) == 0
    assert procstat.pss_kib(never) == 0


def test_the_pss_of_a_child_counts_what_it_shares_in_part_and_what_it_owns_in_full() -> None:
    """A child touches 64 MiB of its own: its PSS grows by about that. Two children of
    one interpreter share its pages, so each one's PSS is below its resident set."""
    touch = "import sys; block = b'x' * (64 << 20); print(flush=True); sys.stdin.read()"
    idle = "import sys; print(flush=True); sys.stdin.read()"
    children = [
        subprocess.Popen([sys.executable, "-c", program], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
        for program in (touch, idle)
    ]  # fmt: skip
    try:
        for child in children:
            assert child.stdout is not None
            child.stdout.readline()  # started, and the block touched
        owner, other = (procstat.pss_kib(child.pid) for child in children)
        assert 60 << 10 < owner - other < 68 << 10
        for child in children:
            usage = procstat.usage(child.pid)
            assert usage is not None
            assert 0 < procstat.pss_kib(child.pid) < usage.rss_kib
    finally:
        for child in children:
            child.kill()  # by its pid
            child.communicate(timeout=30)  # reaped, its pipes closed
