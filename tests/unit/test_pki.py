"""The mesh PKI: a reusable root CA, SPIFFE leaves, renewal, atomic files, foreign certs."""

from __future__ import annotations

import ipaddress
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from mesh.control.certfiles import PKIError
from mesh.control.pki import CertificateInfo, MeshPKI, format_table, leaf, self_signed_ca
from tests.support.clock import Clock

TRUST_DOMAIN = "shop.local"
NAMESPACE = "default"
START = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def clock() -> Clock[datetime]:
    return Clock(START)


@pytest.fixture
def pki(tmp_path: Path, clock: Clock[datetime]) -> MeshPKI:
    return MeshPKI(tmp_path / "pki", TRUST_DOMAIN, NAMESPACE, clock=clock)


@pytest.fixture
def live_pki(tmp_path: Path) -> MeshPKI:
    """On the real clock, like the foreign-certificate helpers (end-to-end tests use both)."""
    return MeshPKI(tmp_path / "pki", TRUST_DOMAIN, NAMESPACE)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def verify_client(ca_path: Path, cert_path: Path, at: datetime) -> list[x509.GeneralName]:
    """Chain-verify a client certificate the way an mTLS server would; its SANs."""
    verifier = PolicyBuilder().store(Store([load(ca_path)])).time(at).build_client_verifier()
    return list(verifier.verify(load(cert_path), []).subjects or [])


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_spiffe_id_names_trust_domain_namespace_and_identity(pki: MeshPKI) -> None:
    assert pki.spiffe_id("catalog") == "spiffe://shop.local/ns/default/sa/catalog"
    with pytest.raises(ValueError, match="identity"):
        pki.spiffe_id("cata/log")


def test_ca_is_created_once_and_reused_by_another_instance(
    tmp_path: Path, clock: Clock[datetime]
) -> None:
    first = MeshPKI(tmp_path / "pki", TRUST_DOMAIN, NAMESPACE, clock=clock).ensure_ca()
    ca_pem = first.cert_path.read_bytes()
    key_pem = first.key_path.read_bytes()

    second = MeshPKI(tmp_path / "pki", TRUST_DOMAIN, NAMESPACE, clock=clock).ensure_ca()

    assert second.serial == first.serial
    assert (second.cert_path.read_bytes(), second.key_path.read_bytes()) == (ca_pem, key_pem)
    assert first.cert_path == tmp_path / "pki" / "ca" / "ca.pem"
    assert first.key_path == tmp_path / "pki" / "ca" / "ca-key.pem"
    assert (first.identity, first.instance, first.spiffe_id) == ("ca", "ca", None)


def test_ca_has_the_root_profile(pki: MeshPKI) -> None:
    info = pki.ensure_ca()
    ca = load(pki.ca_path)

    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "shop.local mesh root CA"
    )
    assert ca.issuer == ca.subject
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert (constraints.value.ca, constraints.value.path_length) == (True, 0)
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert not usage.digital_signature
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(ca.public_key())
    assert info.not_after == START + timedelta(days=30)


def test_ca_expiring_within_a_day_is_replaced(pki: MeshPKI, clock: Clock[datetime]) -> None:
    original = pki.ensure_ca()
    clock.now = START + timedelta(days=28, hours=23)
    assert pki.ensure_ca().serial == original.serial

    clock.now = START + timedelta(days=29, hours=1)
    replaced = pki.ensure_ca()

    assert replaced.serial != original.serial
    assert replaced.not_after == clock.now + timedelta(days=30)


def test_unreadable_ca_is_replaced(pki: MeshPKI) -> None:
    original = pki.ensure_ca()
    original.cert_path.write_text("not a certificate")

    assert pki.ensure_ca().serial != original.serial
    load(pki.ca_path)


def test_ca_validity_within_the_replacement_window_is_refused(pki: MeshPKI) -> None:
    with pytest.raises(ValueError, match="replaced on every run"):
        pki.ensure_ca(validity=timedelta(hours=12))


def test_leaf_verifies_against_the_ca(pki: MeshPKI, clock: Clock[datetime]) -> None:
    info = pki.issue("catalog", "catalog-0")

    subjects = verify_client(pki.ca_path, info.cert_path, clock.now)

    assert subjects == [
        x509.UniformResourceIdentifier("spiffe://shop.local/ns/default/sa/catalog"),
        x509.DNSName("catalog.default.svc"),
    ]


def test_leaf_from_another_ca_does_not_verify(live_pki: MeshPKI, tmp_path: Path) -> None:
    pki = live_pki
    pki.ensure_ca()
    foreign_ca, foreign_key = self_signed_ca(tmp_path / "foreign", "foreign")
    cert, _ = leaf(
        foreign_ca, foreign_key, tmp_path / "foreign", uri_sans=[pki.spiffe_id("edge")], name="x"
    )

    with pytest.raises(VerificationError):
        verify_client(pki.ca_path, cert, datetime.now(UTC))


def test_leaf_has_the_spiffe_uri_its_dns_name_and_the_leaf_profile(pki: MeshPKI) -> None:
    info = pki.issue("catalog", "catalog-0")
    cert = load(info.cert_path)
    ca = load(pki.ca_path)

    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [
        x509.UniformResourceIdentifier(pki.spiffe_id("catalog")),
        x509.DNSName(f"catalog.{pki.namespace}.svc"),
    ]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "catalog"
    assert cert.issuer == ca.subject
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert not usage.key_cert_sign
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert info.not_before == START - timedelta(minutes=1)
    assert info.not_after == START + timedelta(hours=24)
    assert (info.identity, info.instance, info.spiffe_id) == (
        "catalog",
        "catalog-0",
        pki.spiffe_id("catalog"),
    )


def test_key_file_holds_the_certificates_private_key(pki: MeshPKI) -> None:
    info = pki.issue("catalog", "catalog-0")
    key = serialization.load_pem_private_key(info.key_path.read_bytes(), password=None)

    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    assert key.public_key().public_bytes(der, spki) == load(
        info.cert_path
    ).public_key().public_bytes(der, spki)


def test_files_and_directories_are_private_except_certificates(pki: MeshPKI) -> None:
    info = pki.issue("catalog", "catalog-0")

    assert info.cert_path == pki.directory / "catalog-0" / "cert.pem"
    assert info.key_path == pki.directory / "catalog-0" / "key.pem"
    assert mode(info.key_path) == 0o600
    assert mode(info.cert_path) == 0o644
    assert mode(pki.ca_key_path) == 0o600
    assert mode(pki.ca_path) == 0o644
    for directory in (pki.directory, pki.directory / "ca", pki.directory / "catalog-0"):
        assert mode(directory) == 0o700


def test_ensure_reuses_a_fresh_certificate(pki: MeshPKI, clock: Clock[datetime]) -> None:
    first = pki.ensure("catalog", "catalog-0")
    clock.now = START + timedelta(hours=11)

    second = MeshPKI(pki.directory, TRUST_DOMAIN, NAMESPACE, clock=clock).ensure(
        "catalog", "catalog-0"
    )

    assert second == first


def test_ensure_reissues_a_certificate_past_half_its_life(
    pki: MeshPKI, clock: Clock[datetime]
) -> None:
    first = pki.ensure("catalog", "catalog-0")
    clock.now = START + timedelta(hours=13)

    assert pki.needs_renewal(first, clock.now)
    second = pki.ensure("catalog", "catalog-0")

    assert second.serial != first.serial
    assert second.not_after == clock.now + timedelta(hours=24)
    assert not pki.needs_renewal(second, clock.now)


def test_ensure_reissues_when_the_instance_changes_identity(pki: MeshPKI) -> None:
    first = pki.ensure("catalog", "worker-0")

    second = pki.ensure("orders", "worker-0")

    assert second.serial != first.serial
    assert second.spiffe_id == pki.spiffe_id("orders")


def test_ensure_reissues_when_the_trust_domain_changes(
    pki: MeshPKI, clock: Clock[datetime]
) -> None:
    first = pki.ensure("catalog", "catalog-0")

    moved = MeshPKI(pki.directory, "other.local", NAMESPACE, clock=clock)
    second = moved.ensure("catalog", "catalog-0")

    assert second.serial != first.serial
    assert second.spiffe_id == "spiffe://other.local/ns/default/sa/catalog"


def test_certificate_from_a_replaced_ca_needs_renewal(pki: MeshPKI, clock: Clock[datetime]) -> None:
    issued = pki.issue("catalog", "catalog-0")
    assert not pki.needs_renewal(issued, clock.now)
    pki.ca_path.unlink()
    pki.ca_key_path.unlink()
    pki.ensure_ca()

    assert pki.needs_renewal(issued, clock.now)
    renewed = pki.ensure("catalog", "catalog-0")
    assert renewed.serial != issued.serial
    verify_client(pki.ca_path, renewed.cert_path, clock.now)


def test_missing_or_unreadable_certificate_needs_renewal(
    pki: MeshPKI, clock: Clock[datetime]
) -> None:
    info = pki.issue("catalog", "catalog-0")
    info.cert_path.write_text("garbage")
    assert pki.needs_renewal(info, clock.now)
    info.cert_path.unlink()
    assert pki.needs_renewal(info, clock.now)


def test_expired_certificate_needs_renewal_even_with_fraction_zero(
    pki: MeshPKI, clock: Clock[datetime]
) -> None:
    info = pki.issue("catalog", "catalog-0")
    assert not pki.needs_renewal(info, START + timedelta(hours=23), fraction=0)
    assert pki.needs_renewal(info, START + timedelta(hours=24), fraction=0)


def test_writes_leave_no_temporary_files(pki: MeshPKI) -> None:
    pki.issue("catalog", "catalog-0")
    pki.issue("catalog", "catalog-0")

    assert sorted(p.name for p in (pki.directory / "catalog-0").iterdir()) == [
        "cert.pem",
        "key.pem",
    ]
    assert sorted(p.name for p in (pki.directory / "ca").iterdir()) == ["ca-key.pem", "ca.pem"]


def test_failed_certificate_write_keeps_the_old_file_and_is_repaired(
    pki: MeshPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = pki.issue("catalog", "catalog-0")
    old_cert = old.cert_path.read_bytes()
    real_replace = os.replace

    def crash_on_certificate(source: str, target: str | Path) -> None:
        if Path(target).name == "cert.pem":
            raise OSError("disk full")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", crash_on_certificate)
    with pytest.raises(OSError, match="disk full"):
        pki.issue("catalog", "catalog-0")
    monkeypatch.undo()

    # The key was written first; the old certificate is intact but no longer matches it.
    assert old.cert_path.read_bytes() == old_cert
    assert sorted(p.name for p in old.cert_path.parent.iterdir()) == ["cert.pem", "key.pem"]
    assert pki.needs_renewal(old, START)
    repaired = pki.ensure("catalog", "catalog-0")
    assert repaired.serial != old.serial
    assert not pki.needs_renewal(repaired, START)


def test_instance_named_like_the_ca_directory_is_refused(pki: MeshPKI) -> None:
    with pytest.raises(ValueError, match="CA's directory"):
        pki.issue("catalog", "ca")
    with pytest.raises(ValueError, match="instance"):
        pki.issue("catalog", "../elsewhere")


def test_inspect_lists_the_ca_first_then_leaves_in_order(pki: MeshPKI) -> None:
    edge = pki.ensure("edge", "edge")
    catalog_10 = pki.ensure("catalog", "catalog-10")
    catalog_2 = pki.ensure("catalog", "catalog-2")

    infos = MeshPKI(pki.directory, TRUST_DOMAIN, NAMESPACE).inspect()

    assert [(i.identity, i.instance) for i in infos] == [
        ("ca", "ca"),
        ("catalog", "catalog-2"),
        ("catalog", "catalog-10"),
        ("edge", "edge"),
    ]
    assert infos[1:] == [catalog_2, catalog_10, edge]


def test_inspect_of_an_empty_directory_is_empty(tmp_path: Path) -> None:
    assert MeshPKI(tmp_path / "nothing", TRUST_DOMAIN, NAMESPACE).inspect() == []


def test_inspect_names_an_unreadable_certificate(pki: MeshPKI) -> None:
    info = pki.issue("catalog", "catalog-0")
    info.cert_path.write_text("garbage")

    with pytest.raises(PKIError, match="catalog-0"):
        pki.inspect()


def test_format_table_has_a_header_and_one_row_per_certificate(pki: MeshPKI) -> None:
    catalog = pki.issue("catalog", "catalog-0")
    pki.issue("edge", "edge")
    infos = pki.inspect()

    lines = format_table(infos, START + timedelta(minutes=1)).splitlines()

    assert len(lines) == 1 + 3
    assert lines[0].split()[:2] == ["IDENTITY", "INSTANCE"]
    ca_row, catalog_row = lines[1].split(), lines[2].split()
    assert ca_row[:3] == ["ca", "ca", "-"]
    assert ca_row[5] == "29d23h"
    assert catalog_row == [
        "catalog",
        "catalog-0",
        "spiffe://shop.local/ns/default/sa/catalog",
        f"{catalog.serial:x}"[:12],
        "2030-01-02T00:00:00+00:00",
        "23h59m",
        str(catalog.key_path),
    ]


def test_format_table_marks_expired_certificates(pki: MeshPKI) -> None:
    pki.issue("catalog", "catalog-0")

    lines = format_table(pki.inspect(), START + timedelta(days=2)).splitlines()

    assert "expired" in lines[2].split()


def test_self_signed_ca_is_a_different_ca(live_pki: MeshPKI, tmp_path: Path) -> None:
    pki = live_pki
    pki.ensure_ca()

    cert_path, key_path = self_signed_ca(tmp_path / "foreign", "foreign")

    foreign = load(cert_path)
    assert foreign.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "foreign"
    assert foreign.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert foreign.public_key() != load(pki.ca_path).public_key()
    assert mode(key_path) == 0o600


def test_leaf_helper_from_a_foreign_ca_is_not_issued_by_the_mesh(
    live_pki: MeshPKI, tmp_path: Path
) -> None:
    pki = live_pki
    mesh_ca = load(pki.ensure_ca().cert_path)
    ca_cert, ca_key = self_signed_ca(tmp_path / "foreign", "foreign")

    cert_path, _ = leaf(
        ca_cert, ca_key, tmp_path / "foreign", uri_sans=[pki.spiffe_id("edge")], name="intruder"
    )

    cert = load(cert_path)
    cert.verify_directly_issued_by(load(ca_cert))
    assert cert.issuer == load(ca_cert).subject
    assert cert.issuer != mesh_ca.subject


def test_impostor_ca_with_the_mesh_cas_name_is_told_apart(
    live_pki: MeshPKI, tmp_path: Path
) -> None:
    pki = live_pki
    mesh_ca = load(pki.ensure_ca().cert_path)
    impostor_cert, impostor_key = self_signed_ca(tmp_path / "impostor", "shop.local mesh root CA")
    cert_path, key_path = leaf(
        impostor_cert,
        impostor_key,
        tmp_path / "impostor",
        uri_sans=[pki.spiffe_id("edge")],
        name="x",
    )
    forged = CertificateInfo(
        "edge", "x", pki.spiffe_id("edge"), 1, START, START, cert_path, key_path
    )

    assert load(cert_path).issuer == mesh_ca.subject
    with pytest.raises(InvalidSignature):
        load(cert_path).verify_directly_issued_by(mesh_ca)
    with pytest.raises(VerificationError):
        verify_client(pki.ca_path, cert_path, datetime.now(UTC))
    assert pki.needs_renewal(forged, datetime.now(UTC))


def test_leaf_helper_from_the_mesh_ca_carries_the_requested_sans(
    live_pki: MeshPKI, tmp_path: Path
) -> None:
    pki = live_pki
    pki.ensure_ca()
    clients = tmp_path / "clients"

    evil, evil_key = leaf(
        pki.ca_path,
        pki.ca_key_path,
        clients,
        uri_sans=["spiffe://evil.example/ns/default/sa/edge"],
        name="evil",
    )
    dns_only, _ = leaf(
        pki.ca_path, pki.ca_key_path, clients, uri_sans=[], dns_sans=["edge.local"], name="dns"
    )
    bare, _ = leaf(pki.ca_path, pki.ca_key_path, clients, uri_sans=[], name="bare")

    now = datetime.now(UTC)
    assert verify_client(pki.ca_path, evil, now) == [
        x509.UniformResourceIdentifier("spiffe://evil.example/ns/default/sa/edge")
    ]
    assert evil_key == clients / "evil-key.pem"
    dns_san = load(dns_only).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(dns_san) == [x509.DNSName("edge.local")]
    with pytest.raises(x509.ExtensionNotFound):
        load(bare).extensions.get_extension_for_class(x509.SubjectAlternativeName)


# -- the edge's HTTPS certificate: a server's, for ordinary TLS clients ----------------------


def verify_server(
    ca_path: Path, cert_path: Path, name: x509.DNSName | x509.IPAddress, at: datetime
) -> None:
    """Chain-verify a server certificate for `name` as a TLS client (curl, grpc) would."""
    verifier = PolicyBuilder().store(Store([load(ca_path)])).time(at).build_server_verifier(name)
    verifier.verify(load(cert_path), [])


def test_a_server_certificate_names_where_clients_dial_and_no_workload(pki: MeshPKI) -> None:
    info = pki.issue_server("edge-https", ["localhost", "127.0.0.1", "shop.example"])
    cert = load(info.cert_path)

    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == []
    assert (info.dns_names, info.ip_addresses) == (("localhost", "shop.example"), ("127.0.0.1",))
    assert info.spiffe_id is None
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    for name in (x509.DNSName("shop.example"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        verify_server(pki.ca_path, info.cert_path, name, START)
    with pytest.raises(VerificationError):
        verify_server(pki.ca_path, info.cert_path, x509.DNSName("other.example"), START)


def test_ensure_server_reuses_a_good_one_and_reissues_for_other_names(
    pki: MeshPKI, clock: Clock[datetime]
) -> None:
    names = ["localhost", "127.0.0.1"]
    first = pki.ensure_server("edge-https", names)

    assert pki.ensure_server("edge-https", list(reversed(names))) == first
    more = pki.ensure_server("edge-https", [*names, "shop.example"])
    assert more.serial != first.serial
    clock.now = START + timedelta(hours=13)
    assert pki.ensure_server("edge-https", [*names, "shop.example"]).serial != more.serial


def test_renew_keeps_what_a_certificate_names(pki: MeshPKI) -> None:
    """A workload's SPIFFE id and extra DNS names, a server's names: renewed in place."""
    nats = pki.ensure("nats", "nats", dns_names=["nats-0.nats"])
    server = pki.ensure_server("edge-https", ["localhost", "127.0.0.1"])

    renewed_nats = pki.renew(nats)
    renewed_server = pki.renew(server)

    assert renewed_nats.serial != nats.serial
    assert (renewed_nats.spiffe_id, renewed_nats.dns_names) == (nats.spiffe_id, nats.dns_names)
    assert renewed_server.serial != server.serial
    assert (renewed_server.spiffe_id, renewed_server.names) == (None, server.names)
    rows = format_table(pki.inspect(), START).splitlines()
    assert any(row.startswith("edge-https") and "localhost, 127.0.0.1" in row for row in rows)
