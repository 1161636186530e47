"""mTLS between Envoys: certificates from SDS files in watched directories, so rotating a
certificate on disk reaches Envoy without a restart, and peers told apart by the SPIFFE
id in their certificate's URI SAN. And the edge's HTTPS (`server_tls`): ordinary TLS
for clients, its certificate (the `server` secret) from an SDS file the same way."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TLS = "envoy.transport_sockets.tls"
TLS_TYPES = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"

#: The SDS resource files' names, beside a sidecar's bootstrap.
SDS_IDENTITY_FILE = "sds-identity.yaml"
SDS_TRUST_FILE = "sds-trust.yaml"
#: The edge's HTTPS certificate's SDS file, beside its bootstrap.
SDS_SERVER_FILE = "sds-server.yaml"
#: What HTTPS clients may speak, by ALPN: HTTP/2 first (gRPC needs it), else HTTP/1.1.
SERVER_ALPN = ["h2", "http/1.1"]


@dataclass(frozen=True)
class SdsFiles:
    """The SDS resource files of one sidecar and the directories Envoy watches for them."""

    identity: Path
    identity_dir: Path
    trust: Path
    trust_dir: Path
    server: Path | None = None
    """The edge's only: the SDS file of its HTTPS certificate (`with_server`)."""
    server_dir: Path | None = None


def _secret(name: str, **content: Any) -> str:
    """An SDS resource file holding the one secret `name`."""
    secret = {"@type": f"{TLS_TYPES}.Secret", "name": name, **content}
    return yaml.safe_dump({"resources": [secret]})


def _certificate(cert: Path, key: Path) -> dict[str, Any]:
    return {
        "certificate_chain": {"filename": str(cert)},
        "private_key": {"filename": str(key)},
    }


def sds_resources(cert: Path, key: Path, ca: Path) -> dict[str, str]:
    """The SDS resource files (by file name) naming `cert`/`key` (identity) and `ca` (trust)."""
    return {
        SDS_IDENTITY_FILE: _secret("identity", tls_certificate=_certificate(cert, key)),
        SDS_TRUST_FILE: _secret("trust", validation_context={"trusted_ca": {"filename": str(ca)}}),
    }


def server_sds_resources(cert: Path, key: Path) -> dict[str, str]:
    """The SDS resource file (by file name) naming the edge's HTTPS `cert` and `key`."""
    return {SDS_SERVER_FILE: _secret("server", tls_certificate=_certificate(cert, key))}


def with_server(sds: SdsFiles, directory: Path, cert: Path) -> SdsFiles:
    """`sds` and the edge's HTTPS certificate, its SDS file in `directory`: Envoy watches
    the directory of `cert`, where a new certificate and key are renamed into."""
    return dataclasses.replace(sds, server=directory / SDS_SERVER_FILE, server_dir=cert.parent)


def write_server_sds(sds: SdsFiles, directory: Path, cert: Path, key: Path) -> SdsFiles:
    """Write the SDS resource naming the edge's HTTPS `cert` and `key` (`with_server`)."""
    for name, text in server_sds_resources(cert, key).items():
        (directory / name).write_text(text)
    return with_server(sds, directory, cert)


def sds_files(directory: Path, cert: Path, ca: Path) -> SdsFiles:
    """Where a sidecar whose SDS files are in `directory` finds them, and what it watches."""
    return SdsFiles(
        directory / SDS_IDENTITY_FILE, cert.parent, directory / SDS_TRUST_FILE, ca.parent
    )


def write_sds(directory: Path, cert: Path, key: Path, ca: Path) -> SdsFiles:
    """Write the SDS resources naming `cert`/`key` (identity) and `ca` (trust)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in sds_resources(cert, key, ca).items():
        (directory / name).write_text(text)
    return sds_files(directory, cert, ca)


def _sds(name: str, path: Path, watched: Path) -> dict[str, Any]:
    return {
        "name": name,
        "sds_config": {
            "path_config_source": {"path": str(path), "watched_directory": {"path": str(watched)}},
            "resource_api_version": "V3",
        },
    }


def common_tls(sds: SdsFiles, peer_san: dict[str, str], alpn: list[str]) -> dict[str, Any]:
    """This Envoy's certificate, and the peer's: from the mesh CA, its URI SAN `peer_san`."""
    return {
        "tls_certificate_sds_secret_configs": [_sds("identity", sds.identity, sds.identity_dir)],
        "combined_validation_context": {
            "default_validation_context": {
                "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": peer_san}]
            },
            "validation_context_sds_secret_config": _sds("trust", sds.trust, sds.trust_dir),
        },
        "alpn_protocols": alpn,
    }


def upstream_tls(sds: SdsFiles, spiffe_id: str) -> dict[str, Any]:
    """A cluster's transport socket: mTLS as this Envoy, to the peer `spiffe_id` only."""
    return {
        "name": TLS,
        "typed_config": {
            "@type": f"{TLS_TYPES}.UpstreamTlsContext",
            "common_tls_context": common_tls(sds, {"exact": spiffe_id}, ["h2"]),
        },
    }


def server_tls(sds: SdsFiles) -> dict[str, Any]:
    """The edge's HTTPS listener's transport socket: TLS 1.2 or 1.3, HTTP/2 or HTTP/1.1 by
    ALPN, the certificate from SDS (reloaded when one is renamed into its directory); no
    client certificate asked for."""
    assert sds.server is not None, "the edge's HTTPS needs a certificate (`with_server`)"
    assert sds.server_dir is not None
    return {
        "name": TLS,
        "typed_config": {
            "@type": f"{TLS_TYPES}.DownstreamTlsContext",
            "common_tls_context": {
                "tls_certificate_sds_secret_configs": [_sds("server", sds.server, sds.server_dir)],
                "tls_params": {
                    "tls_minimum_protocol_version": "TLSv1_2",
                    "tls_maximum_protocol_version": "TLSv1_3",
                },
                "alpn_protocols": SERVER_ALPN,
            },
        },
    }


def downstream_tls(sds: SdsFiles, trust_domain: str) -> dict[str, Any]:
    """A listener's transport socket: mTLS STRICT, any client certificate from the mesh CA
    naming a SPIFFE id of `trust_domain` (RBAC then decides what that identity may call)."""
    return {
        "name": TLS,
        "typed_config": {
            "@type": f"{TLS_TYPES}.DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": common_tls(sds, {"prefix": f"spiffe://{trust_domain}/"}, ["h2"]),
        },
    }
