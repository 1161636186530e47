"""What a process costs, read from /proc (Linux): CPU time and memory.

CPU time is the process's user plus system time over all its threads, the ones that
have exited included (`/proc/PID/stat`, in clock ticks of 10 ms here, so compare readings
seconds apart). Memory is the resident set (`VmRSS`), the part of it the process itself
allocated (`RssAnon`: without mapped files, such as Envoy's 100 MB binary, which every
Envoy shares), and the peak (`VmHWM`).

What a process adds to the machine is its proportional set size (`Pss` in
`/proc/PID/smaps_rollup`): each page it maps, divided by the number of processes that map
it. Summed over processes, a page nine Envoys share (their binary's code) counts once,
where their resident sets count it nine times.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float
    rss_kib: int
    anon_kib: int
    peak_kib: int


def cpu_seconds_of(stat: str) -> float:
    """User plus system CPU seconds from the text of `/proc/PID/stat`.

    The command name (field 2) is in parentheses and may hold spaces or parentheses of
    its own, so fields are counted from the last `)`: utime and stime are fields 14, 15.
    """
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS_PER_SECOND


def usage(pid: int | None) -> Usage | None:
    """The process's usage now, or None when it is not running."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as stat:
            cpu = cpu_seconds_of(stat.read())
        memory: dict[str, int] = {}
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon", "VmHWM"):
                    memory[key] = int(value.split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return Usage(cpu, memory.get("VmRSS", 0), memory.get("RssAnon", 0), memory.get("VmHWM", 0))


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of every core since boot, from the first line of /proc/stat.

    Waiting for I/O counts as idle; compare two readings for how busy the machine was.
    """
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:9]]
    total = sum(fields)
    idle = fields[3] + fields[4]  # idle, iowait
    return (total - idle) / CLOCK_TICKS_PER_SECOND, total / CLOCK_TICKS_PER_SECOND


def pss_kib(pid: int | None) -> int:
    """Proportional set size of `pid` in KiB (0 when it is not running, or not ours to read)."""
    if not pid:
        return 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return 0


def children(pid: int) -> list[int]:
    """The pids of `pid`'s child processes, started by any of its threads (Linux's
    `/proc/PID/task/TID/children`); none when it is not running."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as listing:
                found.extend(int(child) for child in listing.read().split())
        except (OSError, ValueError):
            continue
    return found
