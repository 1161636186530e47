"""The identities of the mesh on Kubernetes, each a Secret `<identity>-identity`
(`tls.crt`, `tls.key`, `ca.crt`): issued by the mesh CA for the dev overlay
(`meshctl render k8s-secrets`), by cert-manager for prod. And the edge's HTTPS
certificate, the Secret `edge-tls`: the mesh CA's (its names: localhost, 127.0.0.1, the
edge's Service and `edge.https.hosts`), or the user's own files when mesh.yaml names them
(printed by `render k8s-secrets`; prod then has no Certificate for it)."""

from __future__ import annotations

import base64
import ipaddress
from pathlib import Path
from typing import Any

from mesh.control import edge_tls, natsconf
from mesh.control.pki import MeshPKI, service_dns_name
from mesh.control.topology import Topology
from mesh.deploy.containers import dump
from mesh.deploy.kube.edge import NAME as EDGE
from mesh.deploy.kube.edge import TLS_SECRET
from mesh.deploy.kube.event_bus import nats_route_names
from mesh.deploy.kube.objects import CLUSTER_DOMAIN, fqdn, identity_secret, labels, meta


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


def edge_tls_names(topology: Topology) -> list[str]:
    """What the mesh CA's certificate for the edge's HTTPS names on Kubernetes."""
    assert topology.edge.https is not None
    service = fqdn(EDGE, topology.namespace)
    names = [service.removesuffix(f".{CLUSTER_DOMAIN}"), service]
    return edge_tls.server_names(topology.edge.https, *names)


def edge_tls_request(topology: Topology) -> dict[str, Any]:
    """cert-manager's `Certificate` of the edge's HTTPS, from the `Issuer` `shop-mesh-ca`
    (a public issuer's, once the hosts are public)."""
    names = edge_tls_names(topology)
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": meta(TLS_SECRET, "edge"),
        "spec": {
            "secretName": TLS_SECRET,
            "dnsNames": [name for name in names if not _is_address(name)],
            "ipAddresses": [name for name in names if _is_address(name)],
            "duration": "24h",
            "renewBefore": "12h",
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "usages": ["digital signature", "server auth"],
            "issuerRef": {"name": "shop-mesh-ca", "kind": "Issuer"},
        },
    }


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def secrets(topology: Topology, pki: MeshPKI) -> str:
    """The identity Secrets of the dev overlay, issued by the mesh CA in `pki` (kept
    there, so running it again reuses them), and the edge's HTTPS certificate; prod has
    cert-manager issue them instead."""
    objects = [_secret(topology, pki, identity) for identity in identities(topology)]
    if topology.edge.https is not None and topology.edge.expose:
        objects.append(_edge_tls_secret(topology, pki))
    return "---\n".join(dump(item) for item in objects)


def _secret(topology: Topology, pki: MeshPKI, identity: str) -> dict[str, Any]:
    extra = _extra_dns_names(identity, topology.namespace)
    info = pki.ensure(identity, identity, dns_names=extra)
    return _tls_secret(
        topology, identity_secret(identity), "identity", info.cert_path, info.key_path, pki
    )


def _edge_tls_secret(topology: Topology, pki: MeshPKI) -> dict[str, Any]:
    """The edge's HTTPS certificate: the user's files as they are, or the mesh CA's."""
    own = edge_tls.own_files(topology)
    if own is not None:
        edge_tls.checked_pair(*own)
        return _tls_secret(topology, TLS_SECRET, "edge", *own)
    info = pki.ensure_server(edge_tls.EDGE_HTTPS_INSTANCE, edge_tls_names(topology))
    return _tls_secret(topology, TLS_SECRET, "edge", info.cert_path, info.key_path, pki)


def _tls_secret(
    topology: Topology,
    name: str,
    component: str,
    cert: Path,
    key: Path,
    pki: MeshPKI | None = None,
) -> dict[str, Any]:
    """A `kubernetes.io/tls` Secret of `cert` and `key`, and of the mesh CA of `pki`."""
    ca = {"ca.crt": _encoded(pki.ca_path)} if pki is not None else {}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": name,
            "namespace": topology.namespace,
            "labels": labels(name, component),
        },
        "data": {"tls.crt": _encoded(cert), "tls.key": _encoded(key), **ca},
    }


def _encoded(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()
