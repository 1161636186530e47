"""The endpoints of an autoscaled service, which change while the mesh runs: each caller's
cluster of it (every caller's sidecar and the edge) takes them from a file (EDS from the
filesystem), which the supervisor rewrites as it adds and removes replicas
(`mesh.control.autoscaler`). A new file is written beside the old one and renamed over
it, in the directory each Envoy watches, so an Envoy reads either list whole, within
milliseconds of the rename.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mesh.control.envoy.bootstrap import socket_address

_ASSIGNMENT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


def path_of(directory: str | Path, cluster: str) -> Path:
    return Path(directory) / f"{cluster}.json"


def discovery(cluster: str, directory: str | Path) -> dict[str, Any]:
    """A cluster's fields that take its endpoints from its file in `directory`."""
    return {
        "name": cluster,
        "type": "EDS",
        "eds_cluster_config": {
            "service_name": cluster,
            "eds_config": {
                "resource_api_version": "V3",
                "path_config_source": {
                    "path": str(path_of(directory, cluster)),
                    "watched_directory": {"path": str(directory)},
                },
            },
        },
        "connect_timeout": "1s",
    }


def write(directory: str | Path, cluster: str, addresses: Sequence[tuple[str, int]]) -> None:
    """Make `addresses` (host, port) the endpoints of `cluster`, in one rename."""
    endpoints = [{"endpoint": {"address": socket_address(port, host)}} for host, port in addresses]
    document = {
        "version_info": ",".join(f"{host}:{port}" for host, port in addresses) or "none",
        "resources": [
            {
                "@type": _ASSIGNMENT,
                "cluster_name": cluster,
                "endpoints": [{"lb_endpoints": endpoints}],
            }
        ],
    }
    target = path_of(directory, cluster)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text(json.dumps(document))
    os.replace(temporary, target)
