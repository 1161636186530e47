"""The /docs page, rendered by a real headless Chromium, lists the API's operations.

`.ci/run` installs Debian's chromium when it is missing, so CI always runs this test;
elsewhere it is skipped, saying why, when no chromium is installed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.mesh import RunningMesh

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _render(url: str, profile: Path) -> str:
    """The DOM of `url` after its scripts ran, from headless Chromium (stopped by pid)."""
    assert CHROMIUM is not None
    process = subprocess.Popen(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=20000",
            "--dump-dom", url,
        ],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        dom, _ = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return dom


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="no chromium installed (Debian package `chromium`; .ci/run installs it in CI)",
)
def test_the_docs_page_lists_the_operations(mesh: RunningMesh, tmp_path: Path) -> None:
    assert CHROMIUM is not None, "CI must have chromium: .ci/run installs it"
    dom = _render(f"{mesh.edge_url}/docs", tmp_path / "profile")
    assert 'class="swagger-ui"' in dom
    for path in ("/v1/products", "/v1/orders", "/v1/orders/{id}", "/.well-known/jwks.json"):
        assert f'data-path="{path}"' in dom, path
    assert "opblock-summary-method" in dom
    assert "ReserveStock" not in dom
