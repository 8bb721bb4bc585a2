"""The gateway remembers a device chain's verdict, but never its validity: a certificate
that expires after its first enrollment is refused on the next one (RFC 5280 s4.1.2.5)."""

from __future__ import annotations

import asyncio
import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from estcoap import service as svc
from estcoap.gateway.upstream import Upstream

pytestmark = pytest.mark.timeout(20)
NOW = datetime.datetime.now(datetime.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key, issuer: str, signer, start, end, ca: bool) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(signer, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def maker() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    day = datetime.timedelta(days=1)
    return _cert("maker", key, "maker", key, NOW - day, NOW + day, True), key


def _device(maker, start, end) -> tuple[x509.Certificate, ...]:
    ca, ca_key = maker
    key = ec.generate_private_key(ec.SECP256R1())
    return (_cert("device", key, "maker", ca_key, start, end, False),)


def _gateway(maker) -> Upstream:
    # The trust check reads no upstream: no transport call is made.
    return Upstream(object(), trust_clients=[maker[0]])  # type: ignore[arg-type]


def _peer(chain) -> svc.Peer:
    return svc.Peer(transport=svc.Transport.COAPS, certificates=chain, tls_unique=b"u" * 12)


async def test_certificate_expiring_after_a_cached_verdict_is_refused(maker):
    upstream = _gateway(maker)
    chain = _device(
        maker,
        NOW - datetime.timedelta(hours=1),
        datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1.5),
    )
    upstream._authenticate(_peer(chain))  # verified and remembered
    upstream._authenticate(_peer(chain))  # from the cache
    await asyncio.sleep(1.7)
    with pytest.raises(svc.Unauthenticated, match="trusted issuer"):
        upstream._authenticate(_peer(chain))


def test_not_yet_valid_and_foreign_chains_are_refused_every_time(maker):
    upstream = _gateway(maker)
    later = _device(maker, NOW + datetime.timedelta(hours=1), NOW + datetime.timedelta(days=1))
    key = ec.generate_private_key(ec.SECP256R1())
    day = datetime.timedelta(days=1)
    foreign = (_cert("device", key, "maker", key, NOW - day, NOW + day, False),)
    for chain in (later, later, foreign, foreign):
        with pytest.raises(svc.Unauthenticated):
            upstream._authenticate(_peer(chain))


def test_a_remembered_refusal_is_reconsidered_when_the_upstream_ca_changes(maker):
    """The verdict found by the chain's identity is keyed to the anchors it was made with."""
    upstream = _gateway(maker)
    key = ec.generate_private_key(ec.SECP256R1())
    day = datetime.timedelta(days=1)
    other_ca = _cert("other", key, "other", key, NOW - day, NOW + day, True)
    device_key = ec.generate_private_key(ec.SECP256R1())
    chain = (_cert("device", device_key, "other", key, NOW - day, NOW + day, False),)
    peer = _peer(chain)
    for _ in range(2):
        with pytest.raises(svc.Unauthenticated):
            upstream._authenticate(peer)
    upstream.upstream_cas = [other_ca]  # what cacerts() learns from the upstream
    upstream._authenticate(peer)  # the same tuple, now trusted
    upstream._authenticate(_peer(tuple(list(chain))))  # an equal tuple, another association
