"""The relying-side revocation check (estcoap/revocation.py): CRL files verified against
their issuer, reloaded when they change, refused loudly and failing closed when unusable,
and a CA's own records; lookups by dict, whatever the CRL's size."""

from __future__ import annotations

import datetime
import logging
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from estcoap.revocation import CrlError, RevocationChecker, parse_crl, verify_crl
from tests.conftest import FakeClock
from tests.crl_util import NOW, make_crl, write_crl
from tests.dtls_util import Pki

KEY_COMPROMISE = x509.ReasonFlags.key_compromise


def crl_file(tmp_path: Path, pki: Pki, revoked=(), name: str = "maker.crl", **kw) -> Path:
    return write_crl(tmp_path / name, make_crl(pki.ca.certificate, pki.ca.key, revoked, **kw))


def test_revoked_certificate_is_named_with_its_reason(tmp_path: Path, pki: Pki) -> None:
    path = crl_file(tmp_path, pki, [(pki.client.certificate, KEY_COMPROMISE)])
    checker = RevocationChecker([pki.ca.certificate], [path])
    found = checker.check((pki.client.certificate,))
    assert found is not None and found.checked
    assert found.reason == "keyCompromise"
    assert found.serial == pki.client.certificate.serial_number
    assert "is revoked (keyCompromise)" in found.describe()
    assert "CN=device-1" in found.describe()
    # another certificate of the same issuer is fine; the anchor itself is never looked up
    assert checker.check((pki.server.certificate, pki.ca.certificate)) is None


def test_entry_without_reason_is_unspecified_and_der_loads(tmp_path: Path, pki: Pki) -> None:
    crl = make_crl(pki.ca.certificate, pki.ca.key, [(pki.client.certificate, None)])
    path = write_crl(tmp_path / "maker.der", crl, der=True)
    checker = RevocationChecker([pki.ca.certificate], [path])
    assert checker.refusal([pki.client.certificate]).endswith(
        f"is revoked (unspecified) since {NOW - datetime.timedelta(minutes=1):%Y-%m-%dT%H:%M:%SZ}"
    )


def test_certificates_of_other_issuers_are_not_affected(tmp_path: Path, pki: Pki) -> None:
    path = crl_file(tmp_path, pki, [(pki.untrusted_client.certificate.serial_number, None)])
    checker = RevocationChecker([pki.ca.certificate, pki.other_ca.certificate], [path])
    # same serial, other issuer: the CRL of pki.ca says nothing about it
    assert checker.check([pki.untrusted_client.certificate]) is None


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda p, t: write_crl(t / "x.crl", make_crl(p.other_ca.certificate, p.other_ca.key)),
            "is not one of the trust anchors",
        ),
        # signed by another key under the anchor's name
        (
            lambda p, t: write_crl(t / "x.crl", make_crl(p.ca.certificate, p.other_ca.key)),
            "bad signature",
        ),
        (
            lambda p, t: write_crl(
                t / "x.crl",
                make_crl(
                    p.ca.certificate,
                    p.ca.key,
                    this_update=NOW - datetime.timedelta(days=9),
                    next_update=NOW - datetime.timedelta(days=2),
                ),
            ),
            "stale: its nextUpdate",
        ),
        (
            lambda p, t: write_crl(
                t / "x.crl",
                make_crl(
                    p.ca.certificate,
                    p.ca.key,
                    this_update=NOW + datetime.timedelta(hours=1),
                    next_update=NOW + datetime.timedelta(days=2),
                ),
            ),
            "thisUpdate",
        ),
        (lambda p, t: (t / "x.crl").write_bytes(b"not a crl") and t / "x.crl", "not a CRL"),
        (lambda p, t: t / "missing.crl", "cannot read it"),
    ],
    ids=["foreign-issuer", "bad-signature", "stale", "future", "garbage", "missing"],
)
def test_unusable_crl_refused_at_load_in_one_line(tmp_path: Path, pki: Pki, make, message) -> None:
    path = make(pki, tmp_path)
    with pytest.raises(CrlError) as caught:
        RevocationChecker([pki.ca.certificate], [path])
    text = str(caught.value)
    assert message in text and str(path) in text and "\n" not in text


def test_new_file_is_seen_by_the_next_check(tmp_path: Path, pki: Pki) -> None:
    path = crl_file(tmp_path, pki)
    checker = RevocationChecker([pki.ca.certificate], [path])
    assert checker.check([pki.client.certificate]) is None
    crl_file(tmp_path, pki, [(pki.client.certificate, KEY_COMPROMISE)], number=2)
    assert checker.check([pki.client.certificate]).reason == "keyCompromise"
    # rewritten in place too (same inode), and un-revoked (removed from the CRL)
    path.write_bytes(make_crl(pki.ca.certificate, pki.ca.key, number=3).public_bytes(Encoding.PEM))
    os.utime(path, ns=(1, 1))  # a new mtime whatever the file system's granularity
    assert checker.check([pki.client.certificate]) is None
    assert checker.reloads == 2


def test_bad_reload_fails_closed_and_logs_error(tmp_path: Path, pki: Pki, caplog) -> None:
    path = crl_file(tmp_path, pki)
    checker = RevocationChecker([pki.ca.certificate], [path])
    write_crl(path, make_crl(pki.ca.certificate, pki.other_ca.key, number=2))  # forged
    with caplog.at_level(logging.ERROR, logger="estcoap.revocation"):
        found = checker.check([pki.client.certificate])
        assert found is not None and not found.checked
        assert "cannot check revocation" in found.describe()
        assert "bad signature" in found.describe()
        checker.check([pki.client.certificate])
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "CRL reload refused" in errors[0].getMessage()
    # another issuer's devices are not blocked by it
    assert checker.check([pki.untrusted_client.certificate]) is None
    crl_file(tmp_path, pki, number=3)  # fixed: accepted again
    assert checker.check([pki.client.certificate]) is None


def test_crl_going_stale_while_loaded_fails_closed(tmp_path: Path, pki: Pki, caplog) -> None:
    clock = FakeClock()
    path = crl_file(tmp_path, pki, next_update=NOW + datetime.timedelta(hours=1))
    checker = RevocationChecker([pki.ca.certificate], [path], clock=clock.utc)
    assert checker.check([pki.client.certificate]) is None
    clock.advance(2 * 3600)
    with caplog.at_level(logging.ERROR, logger="estcoap.revocation"):
        found = checker.check([pki.client.certificate])
        checker.check([pki.client.certificate])
    assert found is not None and "is stale" in found.describe()
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1


class _Record:
    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.revoked_at = "2030-01-01T00:00:00Z"


def test_records_of_a_local_ca(pki: Pki) -> None:
    revoked = {pki.client.certificate.serial_number: _Record("superseded")}
    checker = RevocationChecker([pki.ca.certificate])
    checker.add_records(pki.ca.certificate, revoked.get)
    assert (
        checker.check([pki.client.certificate])
        .describe()
        .endswith("is revoked (superseded) since 2030-01-01T00:00:00Z")
    )
    assert checker.check([pki.server.certificate]) is None
    assert checker.check([pki.untrusted_client.certificate]) is None  # another issuer


def test_large_crl_is_a_dict(pki: Pki) -> None:
    crl = make_crl(pki.ca.certificate, pki.ca.key, [(n, None) for n in range(1, 2001)])
    verified = verify_crl(
        parse_crl(crl.public_bytes(Encoding.DER), "big.crl"), [pki.ca.certificate], "big.crl"
    )
    assert isinstance(verified.revoked, dict) and len(verified.revoked) == 2000
    assert verified.number == 1
