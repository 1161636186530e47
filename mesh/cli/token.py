"""`meshctl token ...`: a development JWT, minted by the identity service's own command.

The identity service owns its signing key and mints with it; the mesh never imports a
service's code, so meshctl runs the command and hands it every argument.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

from mesh.cli.command import Forwarded, root
from mesh.control.plan import DEFAULT_RUN_DIR

TOKEN_COMMAND = (sys.executable, "-m", "services.identity.token_cli")


def _token(argv: Sequence[str]) -> int:
    if not any(arg == "--run-dir" or arg.startswith("--run-dir=") for arg in argv):
        argv = [*argv, "--run-dir", str(root() / DEFAULT_RUN_DIR)]
    return subprocess.run([*TOKEN_COMMAND, *argv], check=False).returncode


TOKEN = Forwarded(_token)
