"""meshctl's commands: each one's parser, its one-line errors, and what runs without gen/."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mesh import cli
from mesh.cli import app
from mesh.cli.command import Command
from mesh.control.process import pid_alive

PARSED = [listing.name for listing in app.COMMANDS if isinstance(listing.load(), Command)]
HIDDEN = [listing.name for listing in app.COMMANDS if listing.hidden]


@pytest.mark.parametrize("name", PARSED)
def test_every_command_shows_its_own_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([name, "--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: meshctl {name} [-h]")


def test_an_error_the_command_expects_is_one_line_and_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["logs", "nobody", "--run-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"meshctl: no logs of 'nobody' in {tmp_path / 'logs'}\n"


def _meshctl_without_generated_code(*argv: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys\n"
        "sys.modules['shop'] = None  # as on a fresh checkout, before `meshctl proto gen`\n"
        "from mesh.cli import main\n"
        "sys.exit(main(sys.argv[1:]))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("argv", [["--help"], ["proto", "--help"], ["proto", "gen", "--help"]])
def test_meshctl_and_proto_run_before_the_generated_code_exists(argv: list[str]) -> None:
    result = _meshctl_without_generated_code(*argv)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: meshctl")


def _overview(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_the_overview_lists_every_command_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    shown = _overview(capsys)
    listed = [listing.name for listing in app.COMMANDS if not listing.hidden]
    positions = [shown.index(f"\n    {name}") for name in listed]
    assert positions == sorted(positions)


def test_the_overview_leaves_the_hidden_commands_out(capsys: pytest.CaptureFixture[str]) -> None:
    assert HIDDEN == ["supervise"]
    shown = _overview(capsys)
    assert "supervise" not in shown
    assert "SUPPRESS" not in shown


def test_a_mistyped_command_is_not_offered_the_hidden_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["superviser"])
    assert exited.value.code == 2
    told = capsys.readouterr().err
    assert told.startswith("usage: meshctl [-h] COMMAND ...")
    assert "invalid choice: 'superviser' (choose from 'proto', 'up', 'down'," in told
    assert "'supervise'" not in told


def _mistake(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """What meshctl tells of a mistake in `argv` (on stderr), after checking it exits 2."""
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("name", PARSED)
def test_every_command_tells_a_mistake_with_its_own_usage(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    told = _mistake([name, "--no-such-option"], capsys)
    assert told.startswith(f"usage: meshctl {name} [-h]")
    assert f"\nmeshctl {name}: error: " in told


@pytest.mark.parametrize(
    ("argv", "usage", "error"),
    [
        (["up", "--detatch"], "meshctl up", "unrecognized arguments: --detatch"),
        (["logs"], "meshctl logs", "the following arguments are required: service"),
        (["logs", "catalog", "extra"], "meshctl logs", "unrecognized arguments: extra"),
        (["proto", "gen", "--bad"], "meshctl proto gen", "unrecognized arguments: --bad"),
        (["proto", "lnt"], "meshctl proto", "argument STEP: invalid choice: 'lnt'"),
        (["dlq", "list", "--bad"], "meshctl dlq", "unrecognized arguments: --bad"),
        (["dlq", "show"], "meshctl dlq", "show: give a SEQUENCE"),
        (["dlq", "replay", "7", "--all"], "meshctl dlq", "replay: give one SEQUENCE or --all"),
        (["render", "edge-files"], "meshctl render", "edge-files: give the DIRECTORY to write"),
        (
            ["chaos", "kill-everything"],
            "meshctl chaos",
            "argument SCENARIO: invalid choice: 'kill-everything'",
        ),
        (
            ["bench", "--paths", "direct,teleport"],
            "meshctl bench",
            "argument --paths: no path teleport; choose from direct,sidecar,mesh,",
        ),
        (["supervise", "--detach"], "meshctl supervise", "unrecognized arguments: --detach"),
    ],
)
def test_a_mistake_is_told_under_the_usage_of_the_command_that_made_it(
    argv: list[str], usage: str, error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    told = _mistake(argv, capsys)
    assert told.startswith(f"usage: {usage} [-h]")
    assert f"\n{usage}: error: {error}" in told


def _state(run_dir: Path, supervisor: int, app: int) -> None:
    """A `state.json` recording a supervisor and one app, as a supervisor writes it."""
    run_dir.mkdir(exist_ok=True)
    state = {
        "supervisor_pid": supervisor,
        "nats": {"pid": None},
        "instances": [{"app_pid": app, "sidecar_pid": None}],
    }
    (run_dir / "state.json").write_text(json.dumps(state))


#: A pid above the kernel's largest: no process has it, now or later.
NO_PROCESS = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


def test_down_where_no_mesh_ever_ran_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["down", "--run-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"no mesh is running from {tmp_path}\n"
    assert cli.main(["status", "--run-dir", str(tmp_path)]) == 3
    assert capsys.readouterr().out == f"no mesh is running from {tmp_path}\n"


def test_down_after_the_mesh_stopped_says_none_is_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _state(tmp_path, supervisor=NO_PROCESS, app=NO_PROCESS)
    assert cli.main(["down", "--run-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"no mesh is running from {tmp_path}\n"


def test_down_kills_what_outlived_its_supervisor_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    leftover = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        _state(tmp_path, supervisor=NO_PROCESS, app=leftover.pid)
        assert cli.main(["down", "--run-dir", str(tmp_path)]) == 0
        assert leftover.wait(timeout=30) == -9
    finally:
        if pid_alive(leftover.pid):
            leftover.kill()
            leftover.wait(timeout=30)
    told = capsys.readouterr().out
    assert told == f"stopped the mesh of {tmp_path} (killed 1 leftover processes)\n"
