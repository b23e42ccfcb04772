"""The webhook's TLS material: a self-signed CA and a serving certificate signed by it.

The API server verifies the webhook against the ``caBundle`` of the MutatingWebhookConfiguration,
so the CA must outlive operator restarts: it is stored (with its key) in a Secret and reused;
only the serving certificate is re-issued when it no longer fits (names changed, expiring soon).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT_KEY = "ca.crt"
CA_KEY_KEY = "ca.key"
CERT_KEY = "tls.crt"
KEY_KEY = "tls.key"

CA_LIFETIME = datetime.timedelta(days=3650)
CERT_LIFETIME = datetime.timedelta(days=365)
#: A serving certificate with less than this left is re-issued at the next start.
RENEW_BEFORE = datetime.timedelta(days=30)
#: Allows for clocks that are a little behind ours.
BACKDATE = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class TLSBundle:
    """PEM bytes of the CA (certificate and key) and of the serving certificate and key."""

    ca_cert: bytes
    ca_key: bytes
    cert: bytes
    key: bytes

    def as_secret_data(self) -> dict[str, bytes]:
        return {CA_CERT_KEY: self.ca_cert, CA_KEY_KEY: self.ca_key, CERT_KEY: self.cert, KEY_KEY: self.key}

    @classmethod
    def from_secret_data(cls, data: Mapping[str, bytes]) -> TLSBundle | None:
        """The bundle from decoded Secret data, or ``None`` when a key is missing."""
        try:
            return cls(data[CA_CERT_KEY], data[CA_KEY_KEY], data[CERT_KEY], data[KEY_KEY])
        except KeyError:
            return None


def service_dns_names(service: str, namespace: str) -> list[str]:
    """Every name the API server may use to reach ``service`` in ``namespace``."""
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _san(names: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _new_ca(now: datetime.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmcache-webhook-ca")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, names: Sequence[str], now: datetime.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + CERT_LIFETIME, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_san(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def generate(names: Sequence[str], now: datetime.datetime | None = None) -> TLSBundle:
    """A new CA and a serving certificate for ``names`` (DNS names or IP addresses)."""
    if not names:
        raise ValueError("a serving certificate needs at least one name")
    now = now or datetime.datetime.now(datetime.UTC)
    ca_cert, ca_key = _new_ca(now)
    cert, key = _issue(ca_cert, ca_key, names, now)
    return TLSBundle(_pem(ca_cert), _key_pem(ca_key), _pem(cert), _key_pem(key))


def _usable_ca(bundle: TLSBundle, now: datetime.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        ca_cert = x509.load_pem_x509_certificate(bundle.ca_cert)
        ca_key = serialization.load_pem_private_key(bundle.ca_key, password=None)
    except ValueError:
        return None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey) or ca_key.public_key() != ca_cert.public_key():
        return None
    if ca_cert.not_valid_after_utc - now < RENEW_BEFORE:
        return None
    return ca_cert, ca_key


def _cert_fits(bundle: TLSBundle, ca_cert: x509.Certificate, names: Sequence[str], now: datetime.datetime) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(bundle.cert)
        key = serialization.load_pem_private_key(bundle.key, password=None)
        cert.verify_directly_issued_by(ca_cert)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    return (
        key.public_key() == cert.public_key()
        and set(_san(names)) <= set(san)
        and cert.not_valid_after_utc - now >= RENEW_BEFORE
    )


def ensure(existing: TLSBundle | None, names: Sequence[str], now: datetime.datetime | None = None) -> TLSBundle:
    """Reuse ``existing`` when it still fits ``names``; keep its CA when only the leaf must change.

    Keeping the CA keeps the ``caBundle`` of the webhook configuration stable across restarts
    and serving-certificate renewals.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    if existing is None:
        return generate(names, now)
    usable = _usable_ca(existing, now)
    if usable is None:
        return generate(names, now)
    ca_cert, ca_key = usable
    if _cert_fits(existing, ca_cert, names, now):
        return existing
    cert, key = _issue(ca_cert, ca_key, names, now)
    return TLSBundle(existing.ca_cert, existing.ca_key, _pem(cert), _key_pem(key))


def tls_secret(name: str, namespace: str, labels: Mapping[str, str], bundle: TLSBundle) -> dict[str, Any]:
    """The Secret keeping ``bundle`` across restarts (``kubernetes.io/tls`` plus the CA and its key)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "data": {key: base64.b64encode(value).decode("ascii") for key, value in bundle.as_secret_data().items()},
    }


def decode_secret_data(secret: Mapping[str, Any]) -> dict[str, bytes]:
    """A Secret's ``data``, base64-decoded; undecodable entries are left out."""
    decoded: dict[str, bytes] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            decoded[key] = base64.b64decode(str(value), validate=True)
        except binascii.Error:
            continue
    return decoded
