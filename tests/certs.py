"""A throw-away PKI for TLS tests: a CA, a server cert for 127.0.0.1/localhost, a client cert.

Generated with ``cryptography`` (installed with crossbar) so that no key material lives in the
repository and nothing depends on openssl command lines.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TestPKI", "make_pki"]


@dataclass(frozen=True)
class TestPKI:
    """Paths of the PEM files ``make_pki`` wrote."""

    __test__ = False  # not a pytest test class, despite the name

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here: trusting it must not let the client in


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _self_signed_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, common_name: str | None,
          usages: list[x509.ObjectIdentifier], san: list[x509.GeneralName] | None = None,
          ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name) if common_name else x509.Name([]))
        .issuer_name(ca.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_pki(directory: Path) -> TestPKI:
    """Write a CA, a server and a client certificate (with keys) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _self_signed_ca("txetcd test CA")
    other_ca, _ = _self_signed_ca("txetcd unrelated CA")
    # etcd's gateway dials its own gRPC port presenting the server certificate, so with
    # --client-cert-auth that certificate must be valid for client auth as well.
    server, server_key = _leaf(
        ca, ca_key, "localhost", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client, client_key = _leaf(ca, ca_key, "txetcd-test-client",
                               [ExtendedKeyUsageOID.CLIENT_AUTH])
    pki = TestPKI(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem",
                  directory / "client.pem", directory / "client-key.pem",
                  directory / "other-ca.pem")
    _write_cert(ca, pki.ca)
    _write_cert(other_ca, pki.other_ca)
    _write_cert(server, pki.server_cert)
    _write_key(server_key, pki.server_key)
    _write_cert(client, pki.client_cert)
    _write_key(client_key, pki.client_key)
    return pki
