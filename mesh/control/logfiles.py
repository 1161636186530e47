"""The local mesh's app logs, as `meshctl logs` and the console read them.

Each instance's app writes `logs/<instance>.log` in the run directory (its sidecar
writes `<instance>.envoy.log` beside it), appended to run after run. The apps log JSON
lines (`mesh.runtime.telemetry.JsonFormatter`): a level, a message, and the trace and
span they were logged in. A line that is not JSON (a traceback, a crash's last words)
has no level: a level filter keeps it, as what goes wrong is what is looked for, and a
trace filter drops it, as it names no trace.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mesh.runtime import telemetry

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: The end of a log read for its last lines.
TAIL_BYTES = 1 << 20


class LogError(ValueError):
    """A log that is not there, or a filter that means nothing."""


#: The edge Envoy's log, where its access log lines go (`mesh.control.envoy.edge_access`).
EDGE_LOG = "edge.envoy.log"


def app_logs(run_dir: Path, service: str | None = None) -> dict[str, Path]:
    """The app log of each instance (of `service`, or all), by instance name; for
    `service` "edge", the edge's log with its access log lines."""
    if service == "edge":
        path = run_dir / "logs" / EDGE_LOG
        return {"edge": path} if path.exists() else {}
    pattern = f"{service}-*.log" if service else "*.log"
    return {
        path.name.removesuffix(".log"): path
        for path in sorted((run_dir / "logs").glob(pattern))
        if not path.name.endswith(".envoy.log") and _is_instance(path.name)
    }


def _is_instance(name: str) -> bool:
    """`catalog-0.log`, not `nats.log` or `edge.log`."""
    stem = name.removesuffix(".log")
    return "-" in stem and stem.rsplit("-", 1)[1].isdigit()


@dataclass(frozen=True)
class LogFilter:
    level: str | None = None
    """The least level kept (`LEVELS`), or every line."""
    trace_id: str | None = None
    consumer: str | None = None
    """Only the edge's access log lines of this consumer (a token's subject)."""

    def __post_init__(self) -> None:
        if self.level is not None and self.level not in LEVELS:
            raise LogError(f"a level is one of {', '.join(LEVELS)}, not {self.level!r}")

    def keeps(self, line: str) -> bool:
        if self.level is None and self.trace_id is None and self.consumer is None:
            return True  # nothing to read the line for
        fields = telemetry.parse_log_line(line) if line.startswith("{") else None
        for key, wanted in (("trace_id", self.trace_id), ("consumer", self.consumer)):
            if wanted is not None and (fields is None or fields.get(key) != wanted):
                return False
        if self.level is None or fields is None:
            return True
        level = fields.get("level", "")
        return level in LEVELS and LEVELS.index(level) >= LEVELS.index(self.level)

    def kept(self, lines: Iterable[str]) -> list[str]:
        return [line for line in lines if line.strip() and self.keeps(line)]


#: The filter that keeps every line.
EVERY_LINE = LogFilter()


def last_lines(
    path: Path, count: int | None, kept: LogFilter, tail_bytes: int | None = TAIL_BYTES
) -> tuple[list[str], int]:
    """The last `count` lines (all, for None) that `kept` keeps, of the log's last
    `tail_bytes` (the whole log, for None), and the offset the log ends at, to follow
    it from."""
    with path.open("rb") as log:
        end = log.seek(0, os.SEEK_END)
        start = 0 if tail_bytes is None else max(0, end - tail_bytes)
        log.seek(start)
        lines = log.read(end - start).decode(errors="replace").splitlines()
    if start:
        lines = lines[1:]  # the first may be cut
    found = kept.kept(lines)
    return (found if count is None else found[-count:]), end


def lines_after(path: Path, offset: int, kept: LogFilter) -> tuple[list[str], int]:
    """The complete lines written after `offset` that `kept` keeps, and the offset after
    them; from the start again if the log was cut shorter."""
    with path.open("rb") as log:
        end = log.seek(0, os.SEEK_END)
        offset = 0 if end < offset else offset
        log.seek(offset)
        chunk = log.read(end - offset)
    complete = chunk.rfind(b"\n") + 1
    lines = chunk[:complete].decode(errors="replace").splitlines()
    return kept.kept(lines), offset + complete
