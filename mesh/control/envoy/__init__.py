"""Envoy configuration, rendered from the topology, the plan and the contracts.

Every service instance gets one sidecar Envoy (`sidecar.sidecar_config`) with:

* an **inbound** listener (`listeners.inbound`; its address is the instance's address in
  the mesh): mTLS STRICT, a client certificate from the mesh CA whose URI SAN is a SPIFFE
  id of this trust domain (`tls`), then RBAC on that identity (`filters.rbac`): the
  services `mesh.yaml` says call this one may call the methods their `calls:` entry
  names, the edge only the public (non-INTERNAL) methods of an exposed service; anyone
  else gets PERMISSION_DENIED. Requests go on, plaintext, to the app on loopback, with
  the caller's identity in `x-forwarded-client-cert`, no more of them at once than the
  app admits (`clusters.local_app_clusters`, `mesh.runtime.admission`; its expensive
  methods counted apart): one more is refused at once, marked not applied. Health checks
  always pass.
* one **outbound** listener per dependency (`listeners.outbound`), on loopback, where the
  app sends plaintext gRPC. The sidecar balances over every replica of the dependency,
  opens mTLS with this service's identity (and accepts only the dependency's identity),
  and applies the call policy (`routes`, `clusters.dependency_clusters`): a timeout per
  method, passed on as `grpc-timeout`, retries (all retriable conditions for methods
  the contract marks idempotent and mesh.yaml does not mark expensive, only never-sent
  conditions for the others), a retry budget in place of Envoy's default limit of 3
  concurrent retries, outlier detection, circuit breakers (no more in flight than the
  dependency's apps admit).
* certificates from SDS files in watched directories (`tls`), so rotating a certificate
  on disk reaches Envoy without a restart.
* an admin interface on a unix socket only, mode 0600 (`bootstrap.admin`), reached by
  the mesh's own tools through the socket (`admin`).
* in containers only, a plaintext **probe** listener for the orchestrator
  (`listeners.probe_resources`): Envoy's readiness, the app's gRPC health and both sets
  of metrics, nothing else.
* tracing, the same in every Envoy (`tracing`).

The edge Envoy's HTTPS is ordinary TLS for clients (`tls.server_tls`), its certificate
from an SDS file (`write_server_sds`) in a watched directory as well.

The edge Envoy is `edge` (its HTTP filters in `edge_filters`, its own replies in
`edge_replies`). The names below are what the rest of the mesh uses.
"""

from mesh.control.envoy.admin import admin_get, admin_ready, admin_request, admin_stats
from mesh.control.envoy.bootstrap import arguments, command, write_config
from mesh.control.envoy.clusters import (
    LOCAL_APP,
    LOCAL_APP_EXPENSIVE,
    LOOPBACK_MAX_REQUESTS,
    admitted,
    upstream,
)
from mesh.control.envoy.listeners import READY_PATH
from mesh.control.envoy.routes import RETRY_ON_NOT_APPLIED, method_policies, route_timeout
from mesh.control.envoy.sidecar import sidecar_config
from mesh.control.envoy.tls import (
    SdsFiles,
    sds_files,
    sds_resources,
    server_sds_resources,
    with_server,
    write_sds,
    write_server_sds,
)
from mesh.control.envoy.tracing import TRACE_CLUSTER

__all__ = [
    "LOCAL_APP",
    "LOCAL_APP_EXPENSIVE",
    "LOOPBACK_MAX_REQUESTS",
    "READY_PATH",
    "RETRY_ON_NOT_APPLIED",
    "TRACE_CLUSTER",
    "SdsFiles",
    "admin_get",
    "admin_ready",
    "admin_request",
    "admin_stats",
    "admitted",
    "arguments",
    "command",
    "method_policies",
    "route_timeout",
    "sds_files",
    "sds_resources",
    "server_sds_resources",
    "sidecar_config",
    "upstream",
    "with_server",
    "write_config",
    "write_sds",
    "write_server_sds",
]
