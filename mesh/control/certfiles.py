"""The mesh's certificates and keys as PEM files: the X.509 profiles of its root CA and of
its leaves, written so that a watcher never reads half a file, and read back.

Keys are EC P-256. Every file is written to a temporary file in the same directory,
fsynced and renamed over the old one, and the directory fsynced after, so Envoy (which
reloads when a file is moved into a directory it watches) sees the old file or the new.
Directories are 0700, keys 0600 from their first byte, certificates 0644.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: How far in the past a new certificate starts, so a peer whose clock is a little behind
#: does not reject it as "not yet valid".
CLOCK_SKEW = timedelta(minutes=1)

_DIR_MODE = 0o700
_KEY_MODE = 0o600
_CERT_MODE = 0o644


class PKIError(RuntimeError):
    """A certificate or key on disk cannot be used."""


def write_ca(
    cert_path: Path, key_path: Path, common_name: str, now: datetime, validity: timedelta
) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
        # Path length 0: the root signs leaves only, never an intermediate.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_pair(cert_path, key_path, certificate, key)
    return certificate


def write_leaf(
    cert_path: Path,
    key_path: Path,
    ca_certificate: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    common_name: str,
    sans: Sequence[x509.GeneralName],
    now: datetime,
    validity: timedelta,
    client_auth: bool = True,
) -> x509.Certificate:
    """A leaf and its new key; a workload's authenticates servers and clients alike, a
    server's (`client_auth` False: the edge's HTTPS certificate) servers only."""
    key = ec.generate_private_key(ec.SECP256R1())
    usages = [ExtendedKeyUsageOID.SERVER_AUTH]
    if client_auth:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    not_after = min(now + validity, ca_certificate.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(_authority_key_identifier(ca_certificate), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    certificate = builder.sign(ca_key, hashes.SHA256())
    _write_pair(cert_path, key_path, certificate, key)
    return certificate


def _authority_key_identifier(ca_certificate: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        public_key = ca_certificate.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise PKIError("the CA's key is not an EC key") from None
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key)
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)


def _write_pair(
    cert_path: Path,
    key_path: Path,
    certificate: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
) -> None:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_pair_atomically(
        cert_path, certificate.public_bytes(serialization.Encoding.PEM), key_path, key_pem
    )


def write_pair_atomically(cert_path: Path, cert_pem: bytes, key_path: Path, key_pem: bytes) -> None:
    """Replace a certificate and its key, key first: a watcher that sees the new
    certificate finds its key already in place."""
    _write_atomically(key_path, key_pem, _KEY_MODE)
    _write_atomically(cert_path, cert_pem, _CERT_MODE)


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` with `data` so that readers see the old file or the new, never half.

    The temporary file is created 0600 (mkstemp), so a key is never readable by others,
    even for a moment; its final mode is set before the rename.
    """
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fchmod(file.fileno(), mode)
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable: after a crash the name points at the new file.
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def make_private_dir(directory: Path) -> None:
    directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    # mkdir's mode is filtered by the umask and ignored for an existing directory.
    os.chmod(directory, _DIR_MODE)


def read_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as error:
        raise PKIError(f"{path}: not a readable PEM certificate ({error})") from error


def read_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise PKIError(f"{path}: not a readable unencrypted PEM key ({error})") from error
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PKIError(f"{path}: not an EC private key")
    return key


def public_keys_match(certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    def spki(public_key: ec.EllipticCurvePublicKey) -> bytes:
        return public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    public_key = certificate.public_key()
    return isinstance(public_key, ec.EllipticCurvePublicKey) and spki(public_key) == spki(
        key.public_key()
    )


def _sans(certificate: x509.Certificate, kind: type[x509.GeneralName]) -> list[str]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(value) for value in san.value.get_values_for_type(kind)]  # type: ignore[arg-type]


def uri_sans_of(certificate: x509.Certificate) -> list[str]:
    return _sans(certificate, x509.UniformResourceIdentifier)


def dns_sans_of(certificate: x509.Certificate) -> tuple[str, ...]:
    return tuple(_sans(certificate, x509.DNSName))


def ip_sans_of(certificate: x509.Certificate) -> tuple[str, ...]:
    return tuple(_sans(certificate, x509.IPAddress))


def common_name_of(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode()
