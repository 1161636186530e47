"""mTLS between Envoys: certificates from SDS files in watched directories, so rotating a
certificate on disk reaches Envoy without a restart, and peers told apart by the SPIFFE
id in their certificate's URI SAN."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TLS = "envoy.transport_sockets.tls"
TLS_TYPES = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"

#: The SDS resource files' names, beside a sidecar's bootstrap.
SDS_IDENTITY_FILE = "sds-identity.yaml"
SDS_TRUST_FILE = "sds-trust.yaml"


@dataclass(frozen=True)
class SdsFiles:
    """The SDS resource files of one sidecar and the directories Envoy watches for them."""

    identity: Path
    identity_dir: Path
    trust: Path
    trust_dir: Path


def sds_resources(cert: Path, key: Path, ca: Path) -> dict[str, str]:
    """The SDS resource files (by file name) naming `cert`/`key` (identity) and `ca` (trust)."""
    secret = f"{TLS_TYPES}.Secret"
    identity = {
        "@type": secret,
        "name": "identity",
        "tls_certificate": {
            "certificate_chain": {"filename": str(cert)},
            "private_key": {"filename": str(key)},
        },
    }
    trust = {
        "@type": secret,
        "name": "trust",
        "validation_context": {"trusted_ca": {"filename": str(ca)}},
    }
    return {
        SDS_IDENTITY_FILE: yaml.safe_dump({"resources": [identity]}),
        SDS_TRUST_FILE: yaml.safe_dump({"resources": [trust]}),
    }


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
