"""RFC 7512 key URIs as --key-uri and ca/key.uri take them (estcoap/ca/pkcs11uri.py)."""

from __future__ import annotations

import pytest

from estcoap.ca.pkcs11uri import Pkcs11Uri, Pkcs11UriError, is_pkcs11_uri, parse


def test_token_object_id_and_module_path() -> None:
    uri = parse(
        "pkcs11:token=estca;object=ca-key;id=%01%A2?module-path=/usr/lib/softhsm/libsofthsm2.so"
    )
    assert uri == Pkcs11Uri("estca", "ca-key", b"\x01\xa2", "/usr/lib/softhsm/libsofthsm2.so")


def test_percent_encoding_round_trips() -> None:
    uri = Pkcs11Uri("My Token;1", "CA key/2026", None, "/opt/hsm/lib p11.so")
    text = str(uri)
    assert text.startswith("pkcs11:token=My%20Token%3B1;object=CA%20key%2F2026?module-path=/opt/")
    assert parse(text) == uri


def test_scheme_is_case_insensitive_and_type_private_accepted() -> None:
    assert is_pkcs11_uri("PKCS11:token=a;object=b")
    assert parse("PKCS11:token=a;object=b;type=private").object == "b"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("pkcs11:token=a;object=b?pin-value=1234", "pin-value is refused"),
        ("pkcs11:token=a;object=b?pin-source=file:/pin", "pin-source is refused"),
        ("pkcs11:object=b", "must name the token"),
        ("pkcs11:token=a", "must name the key"),
        ("pkcs11:token=a;object=b;slot-id=3", "'slot-id' is not supported"),
        ("pkcs11:token=a;object=b;type=public", "names the private key"),
        ("pkcs11:token=a;token=b;object=c", "given twice"),
        ("pkcs11:token=a;object", "without a value"),
        ("pkcs11:token=;object=b", "must not be empty"),
        ("/etc/ca.key", "not a PKCS#11 URI"),
    ],
)
def test_refusals_say_why(text: str, why: str) -> None:
    with pytest.raises(Pkcs11UriError, match=why):
        parse(text)


def test_a_refused_pin_is_not_echoed() -> None:
    with pytest.raises(Pkcs11UriError) as caught:
        parse("pkcs11:token=a;object=b?pin-value=s3cret")
    assert "s3cret" not in str(caught.value)
