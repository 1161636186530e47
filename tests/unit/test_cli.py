"""meshctl's commands: each one's parser, its one-line errors, and what runs without gen/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mesh import cli
from mesh.cli import app
from mesh.cli.command import Command

PARSED = [listing.name for listing in app.COMMANDS if isinstance(listing.load(), Command)]


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


def test_the_overview_lists_every_command_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    shown = capsys.readouterr().out
    positions = [shown.index(f"\n    {listing.name}") for listing in app.COMMANDS]
    assert positions == sorted(positions)
