"""trust.ChainVerdicts: remembered chain verdicts never outlive a certificate's dates, and
a refusal that only the dates caused is not remembered."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from test_ca_support import cert_peer, foreign_ca, leaf, name, new_ca

from estcoap import trust
from estcoap.ca.local import LocalCA
from estcoap.trust import ID_KP_CMC_RA, ChainVerdicts

pytestmark = pytest.mark.timeout(30)


def _cert(issuer, issuer_key, cn: str, start, end, key=None, eku=None) -> x509.Certificate:  # type: ignore[no-untyped-def]
    """A certificate from issuer, valid from start to end, optionally with an EKU."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )
    if eku is not None:
        builder = builder.add_extension(eku, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def test_good_chains_pass_and_foreign_ones_fail_every_time() -> None:
    ca, ca_key = foreign_ca()
    other, other_key = foreign_ca("Other CA")
    verdicts = ChainVerdicts([ca])
    good = (leaf(ca, ca_key, name("good"))[0],)
    foreign = (leaf(other, other_key, name("foreign"))[0],)
    for _ in range(2):
        assert verdicts.trusted(good)
        assert verdicts.trusted(tuple(good))  # equal, not identical: found by value
        assert not verdicts.trusted(foreign)
    assert not verdicts.trusted(())


def test_a_chain_not_yet_valid_is_accepted_once_it_is(clock) -> None:
    ca, ca_key = foreign_ca()
    start = clock.utc() + dt.timedelta(seconds=2)
    chain = (_cert(ca, ca_key, "later", start, start + dt.timedelta(days=1)),)
    verdicts = ChainVerdicts([ca], now=clock.utc)
    assert not verdicts.trusted(chain)
    assert not verdicts.trusted(chain)
    clock.advance(3)  # certificates count whole seconds: now it is valid
    assert verdicts.trusted(chain)


def test_a_remembered_good_verdict_ends_when_the_chain_expires(clock) -> None:
    ca, ca_key = foreign_ca()
    now = clock.utc()
    end = now + dt.timedelta(seconds=2)
    leaf = _cert(ca, ca_key, "short", now - dt.timedelta(minutes=1), end)
    verdicts, chain = ChainVerdicts([ca], now=clock.utc), (leaf,)
    assert verdicts.trusted(chain) and verdicts.trusted(chain)  # checked, then remembered
    clock.advance(3)  # certificates count whole seconds: now it has expired
    assert not verdicts.trusted(chain)
    assert not verdicts.trusted(tuple(chain))  # found by value: the same answer


def test_expired_chains_are_refused() -> None:
    ca, ca_key = foreign_ca()
    expired = (leaf(ca, ca_key, name("old"), expired=True)[0],)
    assert not ChainVerdicts([ca]).trusted(expired)


def test_made_with_compares_the_anchor_objects() -> None:
    ca, _ = foreign_ca()
    verdicts = ChainVerdicts([ca])
    assert verdicts.made_with([ca])
    assert not verdicts.made_with([])
    assert not verdicts.made_with([ca, ca])
    again = x509.load_der_x509_certificate(ca.public_bytes(Encoding.DER))
    assert not verdicts.made_with([again])  # equal bytes, another object: start over


def test_memory_is_bounded() -> None:
    ca, ca_key = foreign_ca()
    verdicts = ChainVerdicts([ca], size=2)
    for n in range(5):
        assert verdicts.trusted((leaf(ca, ca_key, name(f"d{n}"))[0],))
    assert len(verdicts._by_value) <= 2 and len(verdicts._by_identity) <= 2


def test_an_ra_certificate_not_issued_by_this_ca_is_no_ra(tmp_path) -> None:
    ca: LocalCA = new_ca(tmp_path)
    maker, maker_key = foreign_ca()
    eku = x509.ExtendedKeyUsage([ID_KP_CMC_RA])
    own_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(minutes=1), now + dt.timedelta(days=1)
    own = _cert(ca.ca_certificate, ca._ca_key, "ra", start, end, own_key, eku)
    stranger = _cert(maker, maker_key, "ra", start, end, own_key, eku)
    for _ in range(2):  # first checked, then remembered: the same answers
        assert ca.is_ra(cert_peer(own))
        assert not ca.is_ra(cert_peer(stranger))
    ca.close()


def test_a_chain_read_again_is_found_by_its_bytes_and_another_is_not(monkeypatch) -> None:
    ca, ca_key = foreign_ca()
    verdicts = ChainVerdicts([ca])
    first = leaf(ca, ca_key, name("dev"))[0]
    assert verdicts.trusted((first,))
    again = x509.load_der_x509_certificate(first.public_bytes(Encoding.DER))
    reissued = leaf(ca, ca_key, name("dev"))[0]  # same names, other key and bytes

    def no_new_check(*_args: object) -> bool:
        raise AssertionError("checked again")

    monkeypatch.setattr(trust, "chains_to", no_new_check)
    assert verdicts.trusted((again,))  # other objects, same bytes: remembered
    with pytest.raises(AssertionError, match="checked again"):
        verdicts.trusted((reissued,))


def test_only_a_few_chains_are_held_the_rest_by_digest(monkeypatch) -> None:
    # The identity memory holds the chains it knows; the digest memory holds none.
    monkeypatch.setattr(trust, "IDENTITY_SIZE", 3)
    ca, ca_key = foreign_ca()
    verdicts = ChainVerdicts([ca], size=100)
    chains = [(leaf(ca, ca_key, name(f"d{n}"))[0],) for n in range(6)]
    assert all(verdicts.trusted(chain) for chain in chains)
    assert len(verdicts._by_identity) <= 3
    assert len(verdicts._by_value) == 6
    assert all(isinstance(key, bytes) for key in verdicts._by_value)
    assert all(verdicts.trusted(chain) for chain in chains)  # still known, by digest
