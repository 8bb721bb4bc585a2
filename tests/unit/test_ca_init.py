"""init_ca: the CA directory, its certificates, key modes, and refusing to overwrite."""

from __future__ import annotations

import ipaddress
import os
import sqlite3
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from estcoap.ca import KEY_TYPES, CaExistsError, CaPaths, LocalCA, Store, StoreError, init_ca
from estcoap.ca.store import SCHEMA_VERSION


def _load_chain(path):
    return x509.load_pem_x509_certificates(path.read_bytes())


def test_init_writes_a_usable_ca(tmp_path):
    paths = init_ca(tmp_path / "ca", ["est.example", "127.0.0.1", "::1"])
    assert paths == CaPaths.of(tmp_path / "ca")
    for key_path in (paths.ca_key, paths.server_key):
        assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600

    ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign

    server, chained_ca = _load_chain(paths.server_cert)
    assert chained_ca == ca  # server.pem carries the chain a TLS server sends
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["est.example"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku

    key = serialization.load_pem_private_key(paths.server_key.read_bytes(), None)
    assert key.public_key() == server.public_key()

    # A real TLS server-certificate check (web PKI profile) accepts it for each name.
    store = verification.Store([ca])
    for subject in (x509.DNSName("est.example"), x509.IPAddress(ipaddress.ip_address("::1"))):
        verifier = verification.PolicyBuilder().store(store).build_server_verifier(subject)
        verifier.verify(server, [])


def test_init_creates_the_store_with_the_server_certificate(tmp_path):
    paths = init_ca(tmp_path / "ca", ["localhost"])
    with Store.open(paths.store, create=False) as store:
        assert store.schema_version == SCHEMA_VERSION
        (record,) = store.issued_list()
    server = _load_chain(paths.server_cert)[0]
    assert record.operation == "init"
    assert record.certificate == server
    assert int(record.serial, 16) == server.serial_number


def test_init_refuses_to_overwrite(tmp_path):
    paths = init_ca(tmp_path / "ca", ["localhost"])
    before = {p: p.read_bytes() for p in (paths.ca_cert, paths.ca_key, paths.server_cert)}
    with pytest.raises(CaExistsError, match="already holds a CA"):
        init_ca(tmp_path / "ca", ["other"])
    assert {p: p.read_bytes() for p in before} == before


def test_init_refuses_when_only_the_key_is_there(tmp_path):
    (tmp_path / "ca").mkdir()
    (tmp_path / "ca" / "ca.key").write_bytes(b"precious")
    with pytest.raises(CaExistsError, match="ca.key"):
        init_ca(tmp_path / "ca", ["localhost"])
    assert (tmp_path / "ca" / "ca.key").read_bytes() == b"precious"
    assert not (tmp_path / "ca" / "ca.pem").exists()


@pytest.mark.parametrize("key_type", ["ec-p384", "rsa-2048"])
def test_key_types(tmp_path, key_type):
    assert key_type in KEY_TYPES
    init_ca(tmp_path / "ca", ["localhost"], key_type)
    ca = LocalCA.open(tmp_path / "ca")
    try:
        public = ca.ca_certificate.public_key()
        if key_type.startswith("ec"):
            assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.key_size == 384
        else:
            assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    finally:
        ca.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((["localhost"], "dsa-1024"), "unknown key type"),
        (([],), "at least one hostname"),
    ],
)
def test_bad_arguments(tmp_path, args, message):
    with pytest.raises(ValueError, match=message):
        init_ca(tmp_path / "ca", *args)
    assert not (tmp_path / "ca" / "ca.key").exists()


def test_open_without_ca_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="estcoap ca init"):
        LocalCA.open(tmp_path / "nothing")


def test_store_from_a_newer_estcoap_is_refused(tmp_path):
    paths = init_ca(tmp_path / "ca", ["localhost"])
    with sqlite3.connect(paths.store) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ValueError, match="newer than this estcoap supports"):
        LocalCA.open(paths.dir)


def test_garbage_store_is_a_clear_error(tmp_path):
    (tmp_path / "est.sqlite3").write_bytes(b"this is not a database" * 100)
    (tmp_path / "est.sqlite3").chmod(0o600)  # private, so only its content is wrong
    with pytest.raises(StoreError, match="not a usable CA store"):
        Store.open(tmp_path / "est.sqlite3")
