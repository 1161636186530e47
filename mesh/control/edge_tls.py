"""The edge's HTTPS certificate: the mesh CA's by default, or the user's own, and how a new
one reaches the edge's Envoy without a restart.

Envoy reloads a certificate when a file is renamed into the directory it watches, and
only then: a file written in place, a certbot-style symlink flip elsewhere, or an editor's
save is never seen. So the edge never watches the user's files themselves. The mesh CA's
certificate is issued into the PKI directory (`EDGE_HTTPS_INSTANCE`), renamed into place
on renewal (`mesh.control.certfiles`). The user's own pair (`edge.https.cert_file`,
`key_file`) is copied into a directory of the edge's (`CopiedPair.into`), key first, each
file renamed into place, once the two are found to belong together; a copy that does not
(a certificate replaced before its key) is left alone until one of them changes again.
Before the edge starts the pair is copied once (`copy_pair`); then the edge companion,
which runs beside the edge locally and in Compose, keeps it current (`keep_copied`), so a
replaced certificate is served within about a second. On Kubernetes the certificate is
a Secret, whose mount the kubelet updates by renaming a link into it, which Envoy sees.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mesh.control.certfiles import write_pair_atomically
from mesh.control.pki import MeshPKI
from mesh.control.topology import EdgeHttps, Topology

log = logging.getLogger(__name__)

#: The PKI directory's instance of the mesh CA's certificate for the edge's HTTPS.
EDGE_HTTPS_INSTANCE = "edge-https"
#: The names a local client dials the edge by, which the mesh CA's certificate always has.
LOCAL_NAMES = ("localhost", "127.0.0.1")
#: How often the companion looks at the user's files.
POLL_SECONDS = 1.0


class EdgeTlsError(RuntimeError):
    """The user's certificate and key cannot be served; the message says why."""


def server_names(https: EdgeHttps, *extra: str) -> list[str]:
    """What the mesh CA's certificate for the edge names: localhost and 127.0.0.1, `extra`
    (a cluster's names of the edge), and `edge.https.hosts`."""
    return list(dict.fromkeys([*LOCAL_NAMES, *extra, *https.hosts]))


@dataclass(frozen=True)
class CopiedPair:
    """The user's certificate and key (`source_cert`, `source_key`), and the directory of
    the edge's that Envoy watches, where they are copied to."""

    source_cert: Path
    source_key: Path
    into: Path

    @property
    def cert(self) -> Path:
        return self.into / "cert.pem"

    @property
    def key(self) -> Path:
        return self.into / "key.pem"

    def arguments(self) -> list[str]:
        """The edge companion's arguments that keep this pair copied (`keep_copied`)."""
        return [
            "--tls-cert", str(self.source_cert),
            "--tls-key", str(self.source_key),
            "--tls-dir", str(self.into),
        ]  # fmt: skip


def mesh_ca_issues(topology: Topology) -> bool:
    """Whether the edge serves HTTPS with a certificate of the mesh CA (not the user's)."""
    https = topology.edge.https
    return https is not None and https.cert_file is None


def server_pair(topology: Topology, pki: MeshPKI, copied: CopiedPair | None) -> tuple[Path, Path]:
    """The certificate and key the edge serves over HTTPS: the user's, `copied` into the
    edge's directory (EdgeTlsError if they cannot be served), or the mesh CA's, issued
    if the one there is not good."""
    if copied is not None:
        copy_pair(copied)
        return copied.cert, copied.key
    assert topology.edge.https is not None, "the edge has no HTTPS"
    info = pki.ensure_server(EDGE_HTTPS_INSTANCE, server_names(topology.edge.https))
    return info.cert_path, info.key_path


def own_files(topology: Topology) -> tuple[Path, Path] | None:
    """The user's certificate and key that mesh.yaml names; None: the mesh CA's, or none."""
    https = topology.edge.https
    return None if https is None else https.own_files(topology.source)


def own_pair(topology: Topology, into: Path) -> CopiedPair | None:
    """The user's pair that mesh.yaml names, to be copied into `into`; None: the mesh CA's."""
    files = own_files(topology)
    return None if files is None else CopiedPair(*files, into)


def checked_pair(cert: Path, key: Path) -> tuple[bytes, bytes, x509.Certificate]:
    """The PEM text of `cert` (a chain, the server's certificate first) and of `key`, and
    the certificate; EdgeTlsError unless the key is the certificate's, unencrypted."""
    try:
        cert_pem, key_pem = cert.read_bytes(), key.read_bytes()
    except OSError as error:
        raise EdgeTlsError(f"cannot read {error.filename}: {error.strerror}") from None
    try:
        certificate = x509.load_pem_x509_certificates(cert_pem)[0]
    except ValueError:
        raise EdgeTlsError(f"{cert} holds no PEM certificate") from None
    try:
        private_key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise EdgeTlsError(f"{key} holds no unencrypted PEM private key") from None
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ours = private_key.public_key().public_bytes(der, spki)
    if ours != certificate.public_key().public_bytes(der, spki):
        raise EdgeTlsError(f"{key} is not the key of the certificate in {cert}")
    return cert_pem, key_pem, certificate


def copy_pair(pair: CopiedPair) -> x509.Certificate:
    """Copy the user's pair into the edge's directory, key first, each renamed into place
    (unless the copies there are the same already); EdgeTlsError, and nothing copied,
    unless they belong together."""
    cert_pem, key_pem, certificate = checked_pair(pair.source_cert, pair.source_key)
    if _contents([pair.cert, pair.key]) != [cert_pem, key_pem]:
        pair.into.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_pair_atomically(pair.cert, cert_pem, pair.key, key_pem)
    return certificate


def _contents(paths: Sequence[Path]) -> list[bytes | None]:
    found: list[bytes | None] = []
    for path in paths:
        try:
            found.append(path.read_bytes())
        except OSError:
            found.append(None)
    return found


def _signature(paths: Sequence[Path]) -> tuple[tuple[int, ...], ...]:
    """What changes when a file is replaced, however (renamed over, written in place, or a
    link flipped to another file): its target's device, inode, size and change time."""
    found: list[tuple[int, ...]] = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            found.append(())
            continue
        found.append((stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns))
    return tuple(found)


@dataclass
class PairWatcher:
    """Copies `pair` again whenever its files change (`poll`)."""

    pair: CopiedPair
    _seen: tuple[tuple[int, ...], ...] = field(default=(), init=False)

    def poll(self) -> bool:
        """Copy the pair if its files changed since the last look and belong together;
        whether it was copied. A pair that does not is reported once, not at every look."""
        signature = _signature([self.pair.source_cert, self.pair.source_key])
        if signature == self._seen:
            return False
        self._seen = signature
        try:
            certificate = copy_pair(self.pair)
        except (EdgeTlsError, OSError) as error:
            log.warning("the edge keeps its certificate: %s", error)
            return False
        log.info("the edge serves the certificate with serial %x", certificate.serial_number)
        return True


async def keep_copied(pair: CopiedPair, interval: float = POLL_SECONDS) -> None:
    """Copy `pair` into the edge's directory whenever its files change, until cancelled."""
    watcher = PairWatcher(pair)
    while True:
        await asyncio.to_thread(watcher.poll)
        await asyncio.sleep(interval)


def problems(topology: Topology) -> list[str]:
    """Why the user's certificate and key that mesh.yaml names cannot be served, naming
    the line of `cert_file`; empty when they can, or when the mesh CA issues it."""
    files = own_files(topology)
    if files is None or topology.edge.https is None:
        return []
    try:
        checked_pair(*files)
    except EdgeTlsError as error:
        line = topology.edge.https.lines.get("cert_file")
        where = f"{topology.source or 'mesh.yaml'}" + (f":{line}" if line else "")
        return [f"{where}: edge.https: {error}"]
    return []
