"""`meshctl keys create|list|revoke`: API keys for machine consumers, by identity's command.

Identity owns the keys' records and the key that signs them, and the mesh never imports
a service's code, so meshctl runs identity's command (`services.identity.keys_cli`) and
hands it every argument, with `--run-dir` resolved as every other command resolves it:
the command works on the database of the mesh `up` started there, running or not.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence

from mesh.cli.command import Forwarded, add_run_dir, root, run_dir
from mesh.control.contracts import ContractsError

KEYS_COMMAND = (sys.executable, "-m", "services.identity.keys_cli")


def _keys(argv: Sequence[str]) -> int:
    # `--run-dir` may stand anywhere among the arguments; the rest are identity's.
    where = argparse.ArgumentParser(prog="meshctl keys", add_help=False, allow_abbrev=False)
    add_run_dir(where)
    known, rest = where.parse_known_args(argv)
    command = [*KEYS_COMMAND, "--run-dir", str(run_dir(known)), *rest]
    return subprocess.run(command, cwd=root(), check=False).returncode


KEYS = Forwarded(_keys, errors=(ContractsError,))
