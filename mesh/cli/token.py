"""`meshctl token ...`: a development JWT, minted by the identity service's own command.

The identity service owns its signing key and mints with it; the mesh never imports a
service's code, so meshctl runs the command and hands it every argument. It resolves
`--run-dir` as every other command does (the checkout's `.mesh` unless given, a relative
one from the checkout), so the token is signed with the key of the mesh `up` started.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence

from mesh.cli.command import Forwarded, add_run_dir, root, run_dir
from mesh.control.contracts import ContractsError

TOKEN_COMMAND = (sys.executable, "-m", "services.identity.token_cli")


def _run_dir_and_the_rest(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """`--run-dir`, wherever among the arguments it is, and the arguments for identity."""
    where = argparse.ArgumentParser(prog="meshctl token", add_help=False, allow_abbrev=False)
    add_run_dir(where)
    return where.parse_known_args(argv)


def _token(argv: Sequence[str]) -> int:
    where, rest = _run_dir_and_the_rest(argv)
    command = [*TOKEN_COMMAND, "--run-dir", str(run_dir(where)), *rest]
    return subprocess.run(command, cwd=root(), check=False).returncode


TOKEN = Forwarded(_token, errors=(ContractsError,))
