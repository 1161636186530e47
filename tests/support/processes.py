"""What the kernel says of a test's processes, read from /proc (Linux)."""

from __future__ import annotations

from pathlib import Path


def niceness_of_every_thread(pid: int) -> set[int]:
    """The niceness of each thread of `pid` (field 19 of /proc/PID/task/TID/stat)."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:  # a thread that ended since the listing
            continue
        found.add(int(stat.rsplit(")", 1)[1].split()[16]))
    return found
