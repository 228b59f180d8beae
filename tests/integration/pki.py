"""A throwaway certificate authority and certificates for nats-server under TLS."""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Pki:
    """Paths of a CA certificate and of one certificate and key it signed for ``HOST``,
    good for both sides of a TLS connection (clients and routes)."""

    ca: Path
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        """What a client that trusts only this CA connects with."""
        return ssl.create_default_context(cafile=str(self.ca))


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _signed(builder: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey
            ) -> x509.Certificate:
    now = datetime.now(UTC)
    return (builder.serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))


def make_pki(folder: Path) -> Pki:
    """A new CA, and a certificate it signed for 127.0.0.1 (and localhost), in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _signed(x509.CertificateBuilder().subject_name(_name("ledgershare test CA"))
                 .issuer_name(_name("ledgershare test CA")).public_key(ca_key.public_key())
                 .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True),
                 ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _signed(
        x509.CertificateBuilder().subject_name(_name(HOST)).issuer_name(ca.subject)
        .public_key(key.public_key())
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False),
        ca_key)
    pki = Pki(ca=folder / "ca.crt", cert=folder / "server.crt", key=folder / "server.key")
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(_pem_key(key))
    return pki
