"""Reading and filtering the apps' logs (`mesh.control.logfiles`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mesh.control.logfiles import (
    LogError,
    LogFilter,
    app_logs,
    last_lines,
    lines_after,
)


def _line(level: str, message: str, trace_id: str | None = None) -> str:
    fields = {"level": level, "message": message}
    return json.dumps(fields | ({"trace_id": trace_id} if trace_id else {}))


LOG = [
    _line("INFO", "serving"),
    _line("WARNING", "slow", "t1"),
    "Traceback (most recent call last):",
    _line("ERROR", "failed", "t1"),
    _line("DEBUG", "detail", "t2"),
]


def test_only_the_apps_logs_of_instances_are_listed(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("catalog-0.log", "catalog-0.envoy.log", "nats.log", "edge.log", "orders-1.log"):
        (logs / name).write_text("")
    assert list(app_logs(tmp_path)) == ["catalog-0", "orders-1"]
    assert list(app_logs(tmp_path, "orders")) == ["orders-1"]


def test_a_level_keeps_that_level_and_above_and_every_unstructured_line() -> None:
    assert LogFilter("WARNING").kept(LOG) == [LOG[1], LOG[2], LOG[3]]
    assert LogFilter().kept(LOG) == LOG


def test_a_trace_keeps_only_that_traces_lines() -> None:
    assert LogFilter(trace_id="t1").kept(LOG) == [LOG[1], LOG[3]]
    assert LogFilter("ERROR", "t1").kept(LOG) == [LOG[3]]


def test_a_consumer_keeps_only_the_edges_lines_of_its_requests(tmp_path: Path) -> None:
    access = [json.dumps({"logger": "edge.access", "consumer": who}) for who in ("ann", None)]
    assert LogFilter(consumer="ann").kept([*access, *LOG]) == [access[0]]
    (tmp_path / "logs").mkdir()
    assert app_logs(tmp_path, "edge") == {}
    (tmp_path / "logs" / "edge.envoy.log").write_text(access[0])
    assert app_logs(tmp_path, "edge") == {"edge": tmp_path / "logs" / "edge.envoy.log"}


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(LogError, match="a level is one of DEBUG, INFO"):
        LogFilter("LOUD")


def test_the_last_lines_and_the_new_ones_after_them(tmp_path: Path) -> None:
    path = tmp_path / "catalog-0.log"
    path.write_text("\n".join(LOG) + "\n")
    lines, offset = last_lines(path, 2, LogFilter())
    assert lines == LOG[-2:]
    assert offset == path.stat().st_size
    with path.open("a") as log:
        log.write(_line("ERROR", "later") + "\n" + _line("INFO", "half"))  # the last unfinished
    new, after = lines_after(path, offset, LogFilter("ERROR"))
    assert new == [_line("ERROR", "later")]
    assert lines_after(path, after, LogFilter()) == ([], after)


def test_a_cut_log_is_followed_from_its_start_again(tmp_path: Path) -> None:
    path = tmp_path / "catalog-0.log"
    path.write_text(_line("INFO", "new run") + "\n")
    assert lines_after(path, 10_000, LogFilter()) == (
        [_line("INFO", "new run")],
        path.stat().st_size,
    )


def test_only_the_tail_is_read_but_a_trace_can_search_the_whole_log(tmp_path: Path) -> None:
    path = tmp_path / "catalog-0.log"
    path.write_text(_line("INFO", "old", "t9") + "\n" + "\n".join(LOG) + "\n")
    in_tail, _ = last_lines(path, None, LogFilter(trace_id="t9"), tail_bytes=len(LOG[-1]) + 5)
    assert in_tail == []
    everywhere, _ = last_lines(path, None, LogFilter(trace_id="t9"), tail_bytes=None)
    assert everywhere == [_line("INFO", "old", "t9")]
