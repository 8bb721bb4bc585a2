"""What the client library says about bad inputs and failed outputs: one line naming the
file (never a parser's internals or a temporary file), and nothing lost."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from estcoap.ca import init_ca
from estcoap.client import EstClient, load_certificates, load_private_key
from estcoap.client.api import CredentialError, normalise_fingerprint
from estcoap.files import OutputError, check_writable, rescue, write_file


@pytest.fixture(name="ca")
def ca_fixture(tmp_path: Path):  # type: ignore[no-untyped-def]
    return init_ca(tmp_path / "ca", ["127.0.0.1"])


def test_certificate_files(ca, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    der = tmp_path / "ca.der"
    der.write_bytes(load_certificates(ca.ca_cert)[0].public_bytes(serialization.Encoding.DER))
    assert load_certificates(der) == load_certificates(ca.ca_cert)
    for content, message in [
        (b"", "the file is empty"),
        (b"\x30\x03\x02\x01", "not a certificate (neither PEM nor DER)"),
        (ca.ca_key.read_bytes(), "no certificate in it (it holds a PEM PRIVATE KEY)"),
        (
            ca.ca_cert.read_bytes()[:200] + b"\n-----END CERTIFICATE-----\n",
            "a PEM certificate in it is damaged",
        ),
    ]:
        bad = tmp_path / "bad.pem"
        bad.write_bytes(content)
        with pytest.raises(CredentialError, match=re.escape(f"{bad}: {message}")):
            load_certificates(bad)


def test_key_files(ca, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key = ec.generate_private_key(ec.SECP256R1())
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    for content, message in [
        (encrypted, "the key is encrypted; give it unencrypted"),
        (ca.ca_cert.read_bytes(), "no private key in it (it holds a PEM CERTIFICATE)"),
        (b"\x01\x02", "not a private key"),
    ]:
        bad = tmp_path / "bad.key"
        bad.write_bytes(content)
        with pytest.raises(CredentialError, match=re.escape(f"{bad}: {message}")):
            load_private_key(bad)


def test_key_of_another_certificate_refused(ca) -> None:  # type: ignore[no-untyped-def]
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(CredentialError, match="the given key does not belong to the certif"):
        EstClient("https://127.0.0.1", trust=ca.ca_cert, cert=ca.ca_cert, key=other)
    with pytest.raises(CredentialError, match=f"the key in {ca.server_key} does not belong"):
        EstClient("https://127.0.0.1", trust=ca.ca_cert, cert=ca.ca_cert, key=ca.server_key)


@pytest.mark.parametrize("text", ["zz", "", "ab" * 31, "ab" * 33, "g" * 64])
def test_fingerprint_must_be_sha256(text: str) -> None:
    with pytest.raises(CredentialError, match="not a SHA-256 fingerprint"):
        normalise_fingerprint(text)
    with pytest.raises(CredentialError):
        EstClient("https://127.0.0.1", bootstrap=True, fingerprint=text)


def test_fingerprint_spellings() -> None:
    digits = "0123456789abcdef" * 4
    colons = ":".join(digits[i : i + 2] for i in range(0, 64, 2)).upper()
    assert normalise_fingerprint(digits) == digits
    assert normalise_fingerprint(colons) == digits
    assert normalise_fingerprint(f"sha256 Fingerprint={colons}") == digits


def test_output_checks_and_errors_name_the_users_path(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="directory .*missing does not exist"):
        check_writable(tmp_path / "missing" / "x.pem")
    with pytest.raises(OutputError, match="is a directory"):
        check_writable(tmp_path)
    check_writable(tmp_path / "x.pem")
    target = tmp_path / "gone" / "x.pem"
    with pytest.raises(OutputError) as caught:
        write_file(target, b"data")
    assert str(caught.value).startswith(f"cannot write {target}: ")
    assert ".tmp" not in str(caught.value)
    write_file(tmp_path / "k.pem", b"secret", secret=True)
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_rescue_goes_to_the_current_directory_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    saved = rescue("/gone/dev.pem", b"certificate")
    assert saved.parent == tmp_path and saved.name.endswith("-dev.pem")
    assert saved.read_bytes() == b"certificate"
    assert saved.stat().st_mode & 0o777 == 0o600
    again = rescue("/gone/dev.pem", b"another")  # never overwrites an earlier rescue
    assert again != saved and saved.read_bytes() == b"certificate"
    assert os.path.isabs(again)
