"""The CA hot path: verified-signature memory in trust.py (owned by each service's
ClientTrust), where LocalCA runs its work, and what the store commits and hands back."""

from __future__ import annotations

import sqlite3
import threading

from cryptography.hazmat.primitives.asymmetric import ec
from test_ca_support import cert_peer, enroll_request, foreign_ca, leaf, make_csr, name, new_ca

from estcoap.trust import ClientTrust, SignatureVerdicts, chains_to


def _forged(issuer, name_text: str):  # type: ignore[no-untyped-def]
    """A certificate naming `issuer` but signed by some other key."""
    return leaf(issuer, ec.generate_private_key(ec.SECP256R1()), name(name_text))[0]


def test_a_bad_signature_stays_bad_and_a_good_one_is_remembered() -> None:
    ca, ca_key = foreign_ca()
    good = leaf(ca, ca_key, name("good"))[0]
    forged = _forged(ca, "forged")
    trust = ClientTrust([ca])
    for _ in range(2):
        assert trust.issued_by(good, ca)
        assert not trust.issued_by(forged, ca)
        assert trust.chains_to((good, ca), [ca])
        assert not trust.chains_to((forged, ca), [ca])
    assert (good, ca) in trust.signatures
    assert (forged, ca) not in trust.signatures


def test_each_trust_has_its_own_memory() -> None:
    ca, ca_key = foreign_ca()
    good = leaf(ca, ca_key, name("good"))[0]
    one, other = ClientTrust([ca]), ClientTrust([ca])
    assert one.trusted((good, ca))
    assert (good, ca) in one.signatures
    assert (good, ca) not in other.signatures
    # ... and what one verifier noted counts for that trust alone
    unchecked = _forged(ca, "noted")
    one.note_verified_chain((unchecked, ca))
    assert one.chains_to((unchecked, ca), [ca])
    assert not other.chains_to((unchecked, ca), [ca])
    assert not chains_to((unchecked, ca), [ca])  # no memory: the signature is checked


def test_a_chain_the_transport_verified_is_not_checked_again() -> None:
    ca, _ = foreign_ca()
    # Its signature is wrong: only the note can make it pass, which shows that a noted
    # verdict replaces the signature check (the DTLS layer vouches for what it verified).
    unchecked = _forged(ca, "noted")
    trust = ClientTrust([ca])
    assert not trust.chains_to((unchecked, ca), [ca])
    trust.note_verified_chain((unchecked, ca))
    assert trust.chains_to((unchecked, ca), [ca])
    # ... the anchors are still checked on every call
    other_anchor, _ = foreign_ca("Another CA")
    assert not trust.chains_to((unchecked, ca), [other_anchor])


def test_validity_is_checked_on_every_call_even_for_a_noted_chain() -> None:
    ca, ca_key = foreign_ca()
    expired = leaf(ca, ca_key, name("old"), expired=True)[0]
    trust = ClientTrust([ca])
    trust.note_verified_chain((expired, ca))
    assert not trust.chains_to((expired, ca), [ca])
    assert not trust.trusted((expired, ca))


def test_the_verdict_memory_is_bounded() -> None:
    ca, ca_key = foreign_ca()
    certs = [leaf(ca, ca_key, name(f"d{n}"))[0] for n in range(3)]
    memory = SignatureVerdicts(2)
    for cert in certs:
        memory.add((cert, ca))
    assert (certs[0], ca) not in memory
    assert (certs[1], ca) in memory and (certs[2], ca) in memory
    trust = ClientTrust([ca], size=2)
    for cert in certs:
        assert trust.trusted((cert, ca))
    assert len(trust.signatures) == 2


async def test_enrollment_runs_on_the_loop_unless_commits_are_durable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    maker, maker_key = foreign_ca()
    device = leaf(maker, maker_key, name("device-1"))[0]
    for durable, on_loop in ((False, True), (True, False)):
        ca = new_ca(tmp_path, trust_clients=[maker], durable_commits=durable)
        assert ca.store.durable is durable
        (mode,) = ca.store._db.execute("PRAGMA synchronous").fetchone()
        assert mode == (2 if durable else 1)  # FULL / NORMAL
        threads = []
        process = ca._process

        def spy(*args, _process=process, threads=threads):  # type: ignore[no-untyped-def]
            threads.append(threading.get_ident())
            return _process(*args)

        ca._process = spy  # type: ignore[method-assign]
        result = await ca.enroll(enroll_request(make_csr(), cert_peer(device, maker)))
        assert (threads == [threading.get_ident()]) is on_loop
        (issued,) = result.certificates  # type: ignore[union-attr]
        assert ca.store.find_issued(issued.serial_number) is not None
        ca.close()
    with sqlite3.connect(tmp_path / "ca" / "est.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_record_handed_back_is_the_committed_row(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ca = new_ca(tmp_path)
    cert = leaf(ca.ca_certificate, ca._ca_key, name("row"))[0]
    record = ca.store.record_issued(
        cert, requester="cert:CN=x", operation="enroll", label="l1", csr_sha256="ab"
    )
    assert record == ca.store.find_issued(cert.serial_number)
    assert record.certificate == cert and record.label == "l1"
    ca.close()
