"""The mesh's topology: `mesh.yaml`, loaded once and checked before anything starts.

`mesh.yaml` is the one place that says which services exist, how many replicas each runs,
which ports are fixed, who calls whom and with which policy (timeout, retries, outlier
detection, circuit breaking), what the edge exposes and which SPIFFE trust domain the
certificates name. Envoy configuration, certificates, the local process plan and the
deploy manifests are all derived from the `Topology` built here, so a mistake in the file
must stop the mesh with a message that names the file and the line, never be carried
silently into a rendered config: an unknown key (`replica: 2`) is an error, not ignored.

The data is in `model`; `nodes` reads PyYAML's node tree with its lines, `policies` the
call and method policies, `reader` the sections and the rules across them. Anchors,
aliases and `<<` merge keys work as in any YAML file.

Call policies merge deeply: every `calls:` entry starts from `defaults`, which starts from
the built-in `DEFAULT_CALL_POLICY`; an entry names only what differs.
"""

from __future__ import annotations

from pathlib import Path

from mesh.control.topology.model import (
    ALL_METHODS,
    API_KEY_AUDIENCE,
    BACKGROUND,
    CHEAP,
    COSTS,
    DEFAULT_CALL_POLICY,
    DEFAULT_EDGE_PORT,
    DEFAULT_HTTPS_PORT,
    DEFAULT_NAMESPACE,
    DEFAULT_TRUST_DOMAIN,
    EXPENSIVE,
    HTTP_MODES,
    HTTP_OFF,
    HTTP_ON,
    HTTP_REDIRECT,
    MAX_REPLICAS,
    MAX_RETRY_ATTEMPTS,
    METHOD_GROUPS,
    PRIORITIES,
    PUBLIC_METHODS,
    RESERVED_NAMES,
    SERVING,
    TOTAL_WEIGHT,
    Admission,
    ApiKeys,
    Bucket,
    CallPolicy,
    CircuitBreaker,
    EdgeAuth,
    EdgeHttps,
    EdgeSettings,
    Faults,
    FixedPorts,
    Grant,
    MethodPolicy,
    NatsSettings,
    OutlierDetection,
    Plan,
    RateLimit,
    RetryPolicy,
    Service,
    Topology,
    TopologyError,
    Version,
    parse_duration,
)
from mesh.control.topology.nodes import suggest
from mesh.control.topology.reader import TopologyReader

__all__ = [
    "ALL_METHODS",
    "API_KEY_AUDIENCE",
    "BACKGROUND",
    "CHEAP",
    "COSTS",
    "DEFAULT_CALL_POLICY",
    "DEFAULT_EDGE_PORT",
    "DEFAULT_HTTPS_PORT",
    "DEFAULT_NAMESPACE",
    "DEFAULT_TRUST_DOMAIN",
    "EXPENSIVE",
    "HTTP_MODES",
    "HTTP_OFF",
    "HTTP_ON",
    "HTTP_REDIRECT",
    "MAX_REPLICAS",
    "MAX_RETRY_ATTEMPTS",
    "METHOD_GROUPS",
    "PRIORITIES",
    "PUBLIC_METHODS",
    "RESERVED_NAMES",
    "SERVING",
    "TOTAL_WEIGHT",
    "Admission",
    "ApiKeys",
    "Bucket",
    "CallPolicy",
    "CircuitBreaker",
    "EdgeAuth",
    "EdgeHttps",
    "EdgeSettings",
    "Faults",
    "FixedPorts",
    "Grant",
    "MethodPolicy",
    "NatsSettings",
    "OutlierDetection",
    "Plan",
    "RateLimit",
    "RetryPolicy",
    "Service",
    "Topology",
    "TopologyError",
    "Version",
    "load",
    "parse",
    "parse_duration",
    "suggest",
]


def load(path: Path) -> Topology:
    """Read and check the topology file at `path`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise TopologyError(f"cannot read the topology: {error}", str(path), None) from None
    return TopologyReader(str(path)).topology(text, path)


def parse(text: str, source: str = "mesh.yaml") -> Topology:
    """Check the topology in `text`; `source` names it in error messages."""
    return TopologyReader(source).topology(text, None)
