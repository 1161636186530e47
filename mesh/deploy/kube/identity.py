"""The identities of the mesh on Kubernetes, each a Secret `<identity>-identity`
(`tls.crt`, `tls.key`, `ca.crt`): issued by the mesh CA for the dev overlay
(`meshctl render k8s-secrets`), by cert-manager for prod."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from mesh.control import natsconf
from mesh.control.pki import MeshPKI, service_dns_name
from mesh.control.topology import Topology
from mesh.deploy.containers import dump
from mesh.deploy.kube.event_bus import nats_route_names
from mesh.deploy.kube.objects import identity_secret, labels, meta


def identities(topology: Topology) -> list[str]:
    """Every identity with a Secret on Kubernetes: each service (shared by its pods), the
    edge, NATS and meshctl."""
    return [
        *sorted(topology.services), "edge", natsconf.SERVER_IDENTITY, natsconf.ADMIN_IDENTITY,
    ]  # fmt: skip


def _extra_dns_names(identity: str, namespace: str) -> list[str]:
    """Names an identity's certificate carries beyond its own: NATS's route hosts."""
    return nats_route_names(namespace) if identity == natsconf.SERVER_IDENTITY else []


def certificate_request(topology: Topology, identity: str) -> dict[str, Any]:
    """cert-manager's `Certificate` of `identity`, with its SPIFFE URI, from the `Issuer`
    `shop-mesh-ca`."""
    namespace = topology.namespace
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": meta(identity_secret(identity), "identity"),
        "spec": {
            "secretName": identity_secret(identity),
            "commonName": identity,
            "uris": [f"spiffe://{topology.trust_domain}/ns/{namespace}/sa/{identity}"],
            "dnsNames": [
                service_dns_name(identity, namespace),
                *_extra_dns_names(identity, namespace),
            ],
            "duration": "24h",
            "renewBefore": "12h",
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "usages": ["digital signature", "server auth", "client auth"],
            "issuerRef": {"name": "shop-mesh-ca", "kind": "Issuer"},
        },
    }


def secrets(topology: Topology, pki: MeshPKI) -> str:
    """The identity Secrets of the dev overlay, issued by the mesh CA in `pki` (kept
    there, so running it again reuses them); prod has cert-manager issue them instead."""
    objects = [_secret(topology, pki, identity) for identity in identities(topology)]
    return "---\n".join(dump(item) for item in objects)


def _secret(topology: Topology, pki: MeshPKI, identity: str) -> dict[str, Any]:
    extra = _extra_dns_names(identity, topology.namespace)
    info = pki.ensure(identity, identity, dns_names=extra)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": identity_secret(identity),
            "namespace": topology.namespace,
            "labels": labels(identity_secret(identity), "identity"),
        },
        "data": {
            "tls.crt": _encoded(info.cert_path),
            "tls.key": _encoded(info.key_path),
            "ca.crt": _encoded(pki.ca_path),
        },
    }


def _encoded(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()
