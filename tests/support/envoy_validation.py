"""`envoy --mode validate` as the configuration tests run it: a deprecated field is refused.

Envoy only warns about a deprecated field until a later release refuses it, and the mesh's
Envoys would then fail to start. Envoy's own switch for catching this early is the runtime
key `envoy.features.fail_on_any_deprecated_feature` (its breaking change policy, in
CONTRIBUTING.md): the tests add it with `--config-yaml`, which Envoy merges into the
bootstrap, so the committed configuration stays as the mesh runs it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from mesh.control.binaries import find_binary

#: What `--config-yaml` merges into a bootstrap under validation.
FAIL_ON_DEPRECATED = {
    "layered_runtime": {
        "layers": [
            {
                "name": "deprecated_fields_refused",
                "static_layer": {"envoy.features.fail_on_any_deprecated_feature": True},
            }
        ]
    }
}


def validate(config: Path) -> subprocess.CompletedProcess[str]:
    """Envoy's verdict on `config`, at the log level that shows its warnings."""
    return subprocess.run(
        [find_binary("envoy"), "--mode", "validate", "--config-path", str(config),
         "--config-yaml", json.dumps(FAIL_ON_DEPRECATED), "--disable-hot-restart",
         "--log-level", "warn"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def deprecations(log: str) -> list[str]:
    """The lines of an Envoy log that name a deprecated option."""
    return [line for line in log.splitlines() if "deprecated" in line.lower()]


def refusal(config: Path) -> str:
    """Why Envoy refuses `config`, or "" when it accepts it without a deprecation."""
    result = validate(config)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        return output
    return "\n".join(deprecations(output))
