"""The mesh's certificates: one root CA and short-lived SPIFFE leaves for Envoy's mTLS.

Every Envoy (each sidecar and the edge) presents an X.509 certificate whose only subject
alternative name is the SPIFFE ID of its workload, `spiffe://<trust-domain>/ns/<namespace>/
sa/<identity>`, and accepts a peer only if the peer's certificate chains to the mesh's root
CA; RBAC then authorizes the caller by that ID. So the identity lives in the URI SAN, the
subject CN is only a label for humans, and a certificate carries no DNS names that a
hostname check could accept by mistake.

Layout under the PKI directory (0700 directories, 0600 keys, 0644 certificates):

    ca/ca.pem, ca/ca-key.pem          the root CA (EC P-256, path length 0)
    <instance>/cert.pem, key.pem      one leaf per workload instance, e.g. catalog-0/

Envoy watches each instance directory and reloads when a file is moved into it, so every
file is written to a temporary file in the same directory, fsynced and renamed over the
old one (`mesh.control.certfiles`): Envoy never reads half a file. The key is written
before the certificate; a crash between the two leaves a key that does not match the
certificate, which `needs_renewal` reports, so the next `ensure` repairs it.

Leaves are short-lived (a day by default) and renewed once half their life has passed;
`ensure` reuses a certificate that is still good, so re-running `meshctl up` does not
churn certificates. The module also makes *foreign* CAs and arbitrary leaves
(`self_signed_ca`, `leaf`) so tests can check that Envoy refuses them.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from mesh.control.certfiles import (
    PKIError,
    common_name_of,
    dns_sans_of,
    ip_sans_of,
    make_private_dir,
    public_keys_match,
    read_certificate,
    read_key,
    uri_sans_of,
    write_ca,
    write_leaf,
)

log = logging.getLogger(__name__)

#: A CA that expires sooner than this is replaced rather than reused.
CA_RENEW_BEFORE = timedelta(days=1)

#: The name of the CA's directory; no workload instance may use it.
CA_INSTANCE = "ca"

_CERT_FILE = "cert.pem"
_KEY_FILE = "key.pem"
_CA_CERT_FILE = "ca.pem"
_CA_KEY_FILE = "ca-key.pem"

# SPIFFE path segments and trust domains allow only these characters (SPIFFE-ID spec 2.1, 2.2).
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")


def service_dns_name(identity: str, namespace: str) -> str:
    """The DNS SAN of `identity`'s certificates (see `MeshPKI.service_dns_name`)."""
    return f"{identity}.{namespace}.svc"


@dataclass(frozen=True)
class CertificateInfo:
    """What `meshctl certs` shows about one certificate, as read from its file."""

    identity: str
    instance: str
    spiffe_id: str | None
    serial: int
    not_before: datetime
    not_after: datetime
    cert_path: Path
    key_path: Path
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """The DNS names and IP addresses it is valid for."""
        return self.dns_names + self.ip_addresses

    @property
    def lifetime(self) -> timedelta:
        return self.not_after - self.not_before

    def remaining(self, now: datetime) -> timedelta:
        """How long until the certificate expires (negative once it has)."""
        return self.not_after - now


def utc_now() -> datetime:
    return datetime.now(UTC)


class MeshPKI:
    """The mesh's root CA and the leaves it issues, kept as PEM files under `directory`."""

    def __init__(
        self,
        directory: Path,
        trust_domain: str,
        namespace: str,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if not _TRUST_DOMAIN.fullmatch(trust_domain):
            raise ValueError(
                f"trust domain {trust_domain!r}: use lowercase letters, digits, '.', '-', '_'"
            )
        _check_segment("namespace", namespace)
        self.directory = directory
        self.trust_domain = trust_domain
        self.namespace = namespace
        self._clock = clock

    @property
    def ca_path(self) -> Path:
        """The root CA certificate: the trust bundle every Envoy validates peers against."""
        return self.directory / CA_INSTANCE / _CA_CERT_FILE

    @property
    def ca_key_path(self) -> Path:
        return self.directory / CA_INSTANCE / _CA_KEY_FILE

    def spiffe_id(self, identity: str) -> str:
        _check_segment("identity", identity)
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{identity}"

    def ensure_ca(self, validity: timedelta = timedelta(days=30)) -> CertificateInfo:
        """The root CA, created if absent and reused otherwise.

        A CA that expires within `CA_RENEW_BEFORE` (a day), or whose files cannot be read
        or do not belong together, is replaced by a new one. Every leaf it issued then
        needs renewal (`needs_renewal` checks the issuer), which `ensure` does.
        """
        if validity <= CA_RENEW_BEFORE:
            raise ValueError(
                f"a CA valid for {validity} would be replaced on every run "
                f"(CAs are replaced {CA_RENEW_BEFORE} before they expire)"
            )
        now = self._clock()
        try:
            certificate, _ = self._load_ca()
        except PKIError as error:
            if self.ca_path.exists() or self.ca_key_path.exists():
                log.warning("replacing the mesh CA: %s", error)
        else:
            if certificate.not_valid_after_utc - now > CA_RENEW_BEFORE:
                return self._info(certificate, CA_INSTANCE, self.ca_path, self.ca_key_path)
            log.warning("replacing the mesh CA, which expires %s", certificate.not_valid_after_utc)
        make_private_dir(self.directory)
        make_private_dir(self.ca_path.parent)
        certificate = write_ca(
            self.ca_path, self.ca_key_path, f"{self.trust_domain} mesh root CA", now, validity
        )
        return self._info(certificate, CA_INSTANCE, self.ca_path, self.ca_key_path)

    def leaf_paths(self, instance: str) -> tuple[Path, Path]:
        """Where the certificate and key of `instance` are (or will be) kept."""
        directory = self.directory / instance
        return directory / _CERT_FILE, directory / _KEY_FILE

    def service_dns_name(self, identity: str) -> str:
        """The DNS SAN of `identity`'s certificates, `<identity>.<namespace>.svc`.

        Sidecars authorize peers by the SPIFFE URI alone; the DNS name (which the SPIFFE
        X.509-SVID format allows beside the one URI) lets ordinary TLS clients such as
        grpcurl (`-servername`) verify a sidecar instead of skipping verification.
        """
        return service_dns_name(identity, self.namespace)

    def issue(
        self,
        identity: str,
        instance: str,
        validity: timedelta = timedelta(hours=24),
        dns_names: Sequence[str] = (),
    ) -> CertificateInfo:
        """A new leaf for `identity` in `<directory>/<instance>/`, replacing any there.

        The CA is created (or replaced, see `ensure_ca`) first if need be. A leaf never
        outlives its CA: its expiry is capped at the CA's. `dns_names` are added to the
        one DNS name every leaf has (a NATS server's route names, for instance).
        """
        sans = [
            x509.UniformResourceIdentifier(self.spiffe_id(identity)),
            x509.DNSName(self.service_dns_name(identity)),
            *(x509.DNSName(name) for name in dns_names),
        ]
        return self._write(instance, identity, sans, validity)

    def issue_server(
        self, instance: str, names: Sequence[str], validity: timedelta = timedelta(hours=24)
    ) -> CertificateInfo:
        """A server certificate for ordinary TLS clients (curl, browsers, gRPC clients given
        the mesh CA) in `<directory>/<instance>/`, valid for `names` (DNS names and IP
        addresses), for server authentication only, and with no SPIFFE id: it names a
        place clients dial, not a workload of the mesh, so no sidecar admits it as a peer."""
        sans = [_server_name(name) for name in names]
        return self._write(instance, instance, sans, validity, client_auth=False)

    def _write(
        self,
        instance: str,
        common_name: str,
        sans: Sequence[x509.GeneralName],
        validity: timedelta,
        client_auth: bool = True,
    ) -> CertificateInfo:
        """A new leaf of the CA (made first if need be) in `<directory>/<instance>/`."""
        _check_instance(instance)
        self.ensure_ca()
        ca_certificate, ca_key = self._load_ca()
        directory = self.directory / instance
        make_private_dir(directory)
        certificate = write_leaf(
            directory / _CERT_FILE,
            directory / _KEY_FILE,
            ca_certificate,
            ca_key,
            common_name=common_name,
            sans=sans,
            now=self._clock(),
            validity=validity,
            client_auth=client_auth,
        )
        return self._info(certificate, instance, directory / _CERT_FILE, directory / _KEY_FILE)

    def _existing(self, instance: str) -> CertificateInfo | None:
        """The leaf in `<directory>/<instance>/` (after making sure of the CA), if readable."""
        _check_instance(instance)
        self.ensure_ca()
        directory = self.directory / instance
        try:
            return self._read_info(instance, directory / _CERT_FILE, directory / _KEY_FILE)
        except PKIError:
            return None

    def ensure_server(
        self, instance: str, names: Sequence[str], validity: timedelta = timedelta(hours=24)
    ) -> CertificateInfo:
        """The server certificate in `<directory>/<instance>/` (`issue_server`), issued
        only if the one there does not name exactly `names` or is not good (`ensure`)."""
        existing = self._existing(instance)
        if (
            existing is not None
            and existing.spiffe_id is None
            and set(existing.names) == {str(_server_name(name).value) for name in names}
            and not self.needs_renewal(existing, self._clock())
        ):
            return existing
        return self.issue_server(instance, names, validity)

    def renew(self, info: CertificateInfo) -> CertificateInfo:
        """A new certificate in place of `info`'s, naming what it names: a workload's
        SPIFFE id with its extra DNS names, or a server's names."""
        if info.spiffe_id is None:
            return self.issue_server(info.instance, info.names)
        own = self.service_dns_name(info.identity)
        extra = [name for name in info.dns_names if name != own]
        return self.issue(info.identity, info.instance, dns_names=extra)

    def needs_renewal(self, info: CertificateInfo, now: datetime, fraction: float = 0.5) -> bool:
        """Whether the certificate at `info.cert_path` should be replaced now.

        True when less than `fraction` of its lifetime remains, when the certificate or
        its key is missing, unreadable or mismatched, or when the current CA did not
        issue it. The file is read afresh, so a stale `info` cannot hide a problem.
        """
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be between 0 and 1, not {fraction}")
        try:
            certificate = read_certificate(info.cert_path)
            key = read_key(info.key_path)
            ca_certificate = read_certificate(self.ca_path)
        except PKIError:
            return True
        if not public_keys_match(certificate, key):
            return True
        try:
            certificate.verify_directly_issued_by(ca_certificate)
        except (ValueError, TypeError, InvalidSignature):
            return True
        not_before = certificate.not_valid_before_utc
        not_after = certificate.not_valid_after_utc
        remaining = not_after - now
        return remaining <= timedelta(0) or remaining < (not_after - not_before) * fraction

    def ensure(
        self,
        identity: str,
        instance: str,
        validity: timedelta = timedelta(hours=24),
        dns_names: Sequence[str] = (),
    ) -> CertificateInfo:
        """The leaf in `<directory>/<instance>/`, issued only if the one there is not good.

        A certificate is reused when it names `identity` under the current trust domain
        and namespace, comes from the current CA, matches its key and has more than half
        its life left; so re-running `meshctl up` keeps certificates Envoy already loaded.
        """
        expected = self.spiffe_id(identity)
        existing = self._existing(instance)
        if (
            existing is not None
            and existing.spiffe_id == expected
            and set(dns_names) <= set(existing.dns_names)
            and not self.needs_renewal(existing, self._clock())
        ):
            return existing
        return self.issue(identity, instance, validity, dns_names)

    def inspect(self) -> list[CertificateInfo]:
        """The CA, then every issued leaf (by identity, then instance), read from disk.

        Raises `PKIError` naming the file if a certificate cannot be read: that is a
        problem the operator needs to see, not a row to leave out.
        """
        infos: list[CertificateInfo] = []
        if self.ca_path.exists():
            infos.append(self._read_info(CA_INSTANCE, self.ca_path, self.ca_key_path))
        if not self.directory.is_dir():
            return infos
        leaves = [
            self._read_info(entry.name, entry / _CERT_FILE, entry / _KEY_FILE)
            for entry in self.directory.iterdir()
            if entry.name != CA_INSTANCE and (entry / _CERT_FILE).is_file()
        ]
        leaves.sort(key=lambda info: (info.identity, _natural_key(info.instance)))
        return infos + leaves

    def _load_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        certificate = read_certificate(self.ca_path)
        key = read_key(self.ca_key_path)
        if not public_keys_match(certificate, key):
            raise PKIError(f"{self.ca_key_path} is not the key of {self.ca_path}")
        return certificate, key

    def _read_info(self, instance: str, cert_path: Path, key_path: Path) -> CertificateInfo:
        return self._info(read_certificate(cert_path), instance, cert_path, key_path)

    @staticmethod
    def _info(
        certificate: x509.Certificate, instance: str, cert_path: Path, key_path: Path
    ) -> CertificateInfo:
        uris = uri_sans_of(certificate)
        return CertificateInfo(
            identity=CA_INSTANCE if instance == CA_INSTANCE else common_name_of(certificate),
            instance=instance,
            spiffe_id=uris[0] if uris else None,
            serial=certificate.serial_number,
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            cert_path=cert_path,
            key_path=key_path,
            dns_names=dns_sans_of(certificate),
            ip_addresses=ip_sans_of(certificate),
        )


def format_table(infos: list[CertificateInfo], now: datetime) -> str:
    """The table `meshctl certs` prints: a header, then one row per certificate."""
    header = ("IDENTITY", "INSTANCE", "SPIFFE ID", "SERIAL", "NOT AFTER", "REMAINING", "KEY")
    rows = [header] + [
        (
            info.identity,
            info.instance,
            info.spiffe_id or ", ".join(info.names) or "-",
            f"{info.serial:x}"[:12],
            info.not_after.astimezone(UTC).isoformat(timespec="seconds"),
            _format_remaining(info.remaining(now)),
            str(info.key_path),
        )
        for info in infos
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def self_signed_ca(
    directory: Path, name: str, *, validity: timedelta = timedelta(days=1)
) -> tuple[Path, Path]:
    """A CA that is not the mesh's, as `<directory>/<name>.pem` and `<name>-key.pem`.

    For tests: a client presenting a leaf from this CA must be refused by every Envoy.
    """
    make_private_dir(directory)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    write_ca(cert_path, key_path, name, utc_now(), validity)
    return cert_path, key_path


def leaf(
    ca_cert_path: Path,
    ca_key_path: Path,
    directory: Path,
    *,
    uri_sans: Sequence[str],
    dns_sans: Sequence[str] = (),
    name: str,
    validity: timedelta = timedelta(hours=1),
) -> tuple[Path, Path]:
    """Any leaf signed by any CA, as `<directory>/<name>.pem` and `<name>-key.pem`.

    For tests of refusals: a leaf from a foreign CA, or from the mesh CA with a SPIFFE ID
    of another trust domain, with DNS names only, or with no SAN at all. Otherwise it
    has the profile of a mesh leaf (CN `name`, client and server auth).
    """
    ca_certificate = read_certificate(ca_cert_path)
    ca_key = read_key(ca_key_path)
    make_private_dir(directory)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri) for uri in uri_sans]
    sans += [x509.DNSName(dns) for dns in dns_sans]
    write_leaf(
        cert_path,
        key_path,
        ca_certificate,
        ca_key,
        common_name=name,
        sans=sans,
        now=utc_now(),
        validity=validity,
    )
    return cert_path, key_path


def _format_remaining(remaining: timedelta) -> str:
    if remaining <= timedelta(0):
        return "expired"
    minutes = int(remaining.total_seconds()) // 60
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    return f"{days}d{hours}h" if days else f"{hours}h{minutes:02d}m"


def _natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    # catalog-2 sorts before catalog-10.
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part
    )


def _server_name(name: str) -> x509.GeneralName:
    """A DNS name's or an IP address's subject alternative name."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _check_segment(what: str, value: str) -> None:
    if not _PATH_SEGMENT.fullmatch(value) or value in {".", ".."}:
        raise ValueError(f"{what} {value!r}: use letters, digits, '.', '-', '_'")


def _check_instance(instance: str) -> None:
    _check_segment("instance", instance)
    if instance == CA_INSTANCE:
        raise ValueError(f"instance name {CA_INSTANCE!r} is the CA's directory")
