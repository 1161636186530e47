"""mesh.yaml in tests: the repository's file, and the error or call policy of a snippet."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from mesh.control.topology import CallPolicy, TopologyError, parse

REPOSITORY_MESH_YAML = Path(__file__).resolve().parents[2] / "mesh.yaml"


def parse_error(text: str) -> TopologyError:
    """The error that parsing `text` (dedented) raises; the test fails if it raises none."""
    with pytest.raises(TopologyError) as caught:
        parse(dedent(text))
    return caught.value


def call_policy(text: str, caller: str = "a", callee: str = "b") -> CallPolicy:
    """The policy of `caller`'s call to `callee` in `text` (dedented)."""
    return parse(dedent(text)).services[caller].calls[callee]
