"""The Envoy bootstrap of one service instance's sidecar, composed of its listeners and
clusters (see the package's docstring for what each does)."""

from __future__ import annotations

from typing import Any

from mesh.control.api import Api
from mesh.control.envoy import splits
from mesh.control.envoy.bootstrap import bootstrap
from mesh.control.envoy.clusters import LOCAL_APP, dependency_clusters, local_app_clusters
from mesh.control.envoy.listeners import inbound, outbound, probe_resources
from mesh.control.envoy.tls import SdsFiles
from mesh.control.envoy.tracing import trace_cluster
from mesh.control.plan import InstancePlan, MeshPlan
from mesh.control.topology import Topology


def sidecar_config(
    topology: Topology, plan: MeshPlan, instance: InstancePlan, api: Api, sds: SdsFiles
) -> dict[str, Any]:
    """The Envoy bootstrap of `instance`'s sidecar."""
    service = topology.services[instance.service]
    dependencies = sorted(service.calls)
    listeners = [
        inbound(topology, plan, api, instance, sds),
        *(
            outbound(topology, instance.service, dependency, instance.outbound[dependency], api)
            for dependency in dependencies
        ),
    ]
    clusters = [
        *local_app_clusters(service, instance.app_port),
        trace_cluster(topology, plan),
        *(
            cluster
            for dependency in dependencies
            for cluster in dependency_clusters(
                topology, plan, dependency, service.calls[dependency], sds
            )
        ),
    ]
    if instance.probe_port:
        probe, probe_clusters = probe_resources(
            plan, instance.probe_port, instance.admin_socket, LOCAL_APP, instance.metrics_port
        )
        listeners.append(probe)
        clusters += probe_clusters
    split = splits.runtime(topology, plan.routing_root, dependencies)
    return bootstrap(
        instance.name, instance.service, instance.admin_socket, listeners, clusters, split
    )
