"""The self-signed CA and serving certificate: valid TLS, reused while they fit."""

from __future__ import annotations

import datetime
import ssl

from cryptography import x509
from llmcache_operator import certs

NAMES = certs.service_dns_names("llmcache-webhook", "llmcache-system")
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def test_generated_bundle_loads_into_ssl_and_names_the_service(tmp_path) -> None:
    bundle = certs.generate(NAMES + ["127.0.0.1"])
    (tmp_path / "tls.crt").write_bytes(bundle.cert)
    (tmp_path / "tls.key").write_bytes(bundle.key)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    client = ssl.create_default_context(cadata=bundle.ca_cert.decode())
    assert client.get_ca_certs()[0]["subject"] == ((("commonName", "llmcache-webhook-ca"),),)
    cert = x509.load_pem_x509_certificate(bundle.cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "llmcache-webhook.llmcache-system.svc" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(bundle.ca_cert))


def test_a_fitting_bundle_is_reused_unchanged() -> None:
    bundle = certs.generate(NAMES, NOW)
    assert certs.ensure(bundle, NAMES, NOW + datetime.timedelta(days=100)) is bundle


def test_new_names_reissue_the_leaf_under_the_same_ca() -> None:
    bundle = certs.generate(NAMES, NOW)
    renewed = certs.ensure(bundle, NAMES + ["webhook.example"], NOW)
    assert renewed.ca_cert == bundle.ca_cert and renewed.ca_key == bundle.ca_key
    assert renewed.cert != bundle.cert
    cert = x509.load_pem_x509_certificate(renewed.cert)
    assert "webhook.example" in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def test_an_expiring_leaf_is_reissued_under_the_same_ca() -> None:
    bundle = certs.generate(NAMES, NOW)
    later = NOW + certs.CERT_LIFETIME - datetime.timedelta(days=1)
    renewed = certs.ensure(bundle, NAMES, later)
    assert renewed.ca_cert == bundle.ca_cert
    assert x509.load_pem_x509_certificate(renewed.cert).not_valid_after_utc > later + certs.RENEW_BEFORE


def test_garbage_or_partial_secret_data_gives_a_fresh_bundle() -> None:
    assert certs.TLSBundle.from_secret_data({"tls.crt": b"x"}) is None
    broken = certs.TLSBundle(b"not a cert", b"not a key", b"x", b"y")
    fresh = certs.ensure(broken, NAMES, NOW)
    assert fresh.ca_cert.startswith(b"-----BEGIN CERTIFICATE-----")
    assert certs.TLSBundle.from_secret_data(fresh.as_secret_data()) == fresh


def test_a_leaf_from_another_ca_is_reissued_under_the_stored_ca() -> None:
    bundle = certs.generate(NAMES, NOW)
    stranger = certs.generate(NAMES, NOW)
    mixed = certs.TLSBundle(bundle.ca_cert, bundle.ca_key, stranger.cert, stranger.key)
    fixed = certs.ensure(mixed, NAMES, NOW)
    assert fixed.ca_cert == bundle.ca_cert and fixed.cert != stranger.cert
    x509.load_pem_x509_certificate(fixed.cert).verify_directly_issued_by(x509.load_pem_x509_certificate(bundle.ca_cert))
