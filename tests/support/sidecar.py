"""A real sidecar, as a container runs it (with its probe listener), in front of an app."""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
from pathlib import Path
from typing import Any

from mesh.control import envoy
from mesh.control.api import Api
from mesh.control.contracts import DESCRIPTOR_SET, Workspace
from mesh.control.pki import MeshPKI
from mesh.control.plan import InstancePlan, free_port, make_plan
from mesh.control.topology import parse


def sidecar_config(directory: Path, **ports: Any) -> tuple[InstancePlan, Path]:
    """catalog's sidecar configuration, as the mesh renders it, with the `ports` given
    (`app_port=...`), its certificate issued: the instance and the configuration's path."""
    root = Workspace.find(Path(__file__).parent).root
    api = Api.from_descriptor_set(root / DESCRIPTOR_SET)
    topology = parse("services:\n  catalog: {}\n")
    plan = make_plan(topology, directory)
    instance = dataclasses.replace(plan.instances[0], **ports)
    pki = MeshPKI(directory / "pki", topology.trust_domain, topology.namespace)
    cert = pki.ensure("catalog", "catalog-0")
    sds = envoy.write_sds(directory / "sds", cert.cert_path, cert.key_path, pki.ca_path)
    config = envoy.write_config(
        envoy.sidecar_config(topology, plan, instance, api, sds), directory / "envoy.yaml"
    )
    return instance, config


def started_sidecar(
    stack: contextlib.ExitStack, directory: Path, app_address: str, **ports: Any
) -> tuple[InstancePlan, subprocess.Popen[bytes]]:
    """catalog's sidecar, in front of the app at `app_address`, with a probe port and the
    `ports` given (`metrics_port=...`); stopped, by its pid, when `stack` closes."""
    instance, config = sidecar_config(
        directory, app_port=int(app_address.rsplit(":", 1)[1]), probe_port=free_port(), **ports
    )
    sidecar = subprocess.Popen(
        envoy.command(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    stack.callback(sidecar.wait, 10)
    stack.callback(sidecar.terminate)
    return instance, sidecar
