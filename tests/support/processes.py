"""What the kernel says of a test's processes, read from /proc (Linux)."""

from __future__ import annotations

from pathlib import Path


def niceness_of_every_thread(pid: int) -> set[int]:
    """The niceness of each thread of `pid` (field 19 of /proc/PID/task/TID/stat)."""
    tasks = Path(f"/proc/{pid}/task")
    return {
        int((task / "stat").read_text().rsplit(")", 1)[1].split()[16]) for task in tasks.iterdir()
    }
