"""schemathesis against the running edge, driven by the edge's own /openapi.json.

Bounded: at most 50 examples per operation and a time budget. It passes only with no
server error (5xx) and every response conforming to the document: status code, content
type and body schema. What it finds is fixed in the services, the generator or the edge,
never by loosening these checks.
"""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
import pytest

from mesh.control.binaries import find_binary
from tests.support.mesh import RunningMesh

pytestmark = pytest.mark.integration

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
)


def test_schemathesis_finds_no_server_error_and_no_schema_violation(mesh: RunningMesh) -> None:
    url = mesh.edge_url
    token = mesh.token(
        "schemathesis", "catalog:write", "inventory:write", "orders:read", "orders:write",
        "payments:read", "identity:keys",
    )  # fmt: skip
    document = httpx.get(f"{url}/openapi.json", timeout=30).json()
    verbs = {"get", "put", "post", "delete", "patch"}
    operations = sum(len(verbs & set(item)) for item in document["paths"].values())
    result = subprocess.run(
        [
            find_binary("schemathesis"), "run", f"{url}/openapi.json", "--url", url,
            "-H", f"authorization: Bearer {token}",
            "--checks", CHECKS,
            "--max-examples", "50",
            "--max-time", "120",
            "--seed", "20261126",
            "--generation-database", "none",
            "--no-color",
        ],
        capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    summary = result.stdout[result.stdout.find("SUMMARY") :]
    sys.stdout.write(summary)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert f"Tested: {operations}" in summary  # every operation of the document
    cases = re.search(r"(\d+) generated, (\d+) passed", summary)
    assert cases is not None, summary
    assert int(cases[1]) >= 500
    assert cases[1] == cases[2]
