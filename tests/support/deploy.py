"""The committed deploy files, as the deploy tests read them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from mesh.control.topology import Topology, load
from mesh.deploy import compose

ROOT = Path(__file__).resolve().parents[2]
MESHCTL = [sys.executable, "-m", "mesh.cli"]


def repository_topology() -> Topology:
    return load(ROOT / "mesh.yaml")


def committed_compose_file() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / compose.COMPOSE_FILE).read_text())
    return document


def documents(text: str) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(text) if document]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}
