"""Mutated vectors: every decoder either decodes or raises its own codec error, never anything else.

A server hands these decoders untrusted bytes; an unexpected exception type
would escape the fronts' error mapping and become a 5.00 / 500 instead of a
4.00 / 400 with a diagnostic. Seeded, so a failure reproduces.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from estcoap.codec import csrattrs, multipart, pkcs7, pkcs10
from estcoap.codec.errors import CsrAttrsError, CsrError, MultipartError, Pkcs7Error

pytestmark = pytest.mark.timeout(60)

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
ROUNDS = 4000


def mutations(seed_files: list[str], seed: int):
    rng = random.Random(seed)
    seeds = [(VECTORS / name).read_bytes() for name in seed_files]
    for _ in range(ROUNDS):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(data))
            roll = rng.random()
            if roll < 0.6:
                data[position] = rng.randrange(256)
            elif roll < 0.8:
                del data[position]
            else:
                data.insert(position, rng.randrange(256))
        yield bytes(data)


def use_csrattrs(data: bytes) -> None:
    items = csrattrs.decode_csrattrs(data)
    csrattrs.requested_key(items)
    csrattrs.requested_extensions(items)
    csrattrs.requested_signature_hash(items)
    csrattrs.csrattrs_warnings(items)
    template = csrattrs.requested_template(items)
    if template is not None:
        _ = (template.key, template.extension_templates)


def use_csr(data: bytes) -> None:
    csr = pkcs10.parse_csr(data, check_signature=False)  # fields are decoded when read
    _ = (csr.subject_alt_name, csr.signature_hash, csr.sha256, csr.subject)
    _ = (csr.challenge_password, csr.public_key_der)
    pkcs10.parse_csr(data)


def use_mixed(data: bytes) -> None:
    multipart.decode_multipart_mixed(data, "multipart/mixed; boundary=estServerExampleBoundary")


CASES: dict[str, tuple[list[str], Callable[[bytes], object], type[Exception]]] = {
    "csrattrs": (
        ["rfc7030/A2-csrattrs-response.der", "rfc7030/S4.5.2-csrattrs-example.der"],
        use_csrattrs,
        CsrAttrsError,
    ),
    "pkcs10": (
        ["rfc9148/A2-sen-request.csr.der", "rfc9148/A3-skg-request.csr.der"],
        use_csr,
        CsrError,
    ),
    "pkcs7": (
        ["rfc9148/A1-cacerts-response.der", "rfc7030/A3-simpleenroll-response.p7.der"],
        pkcs7.decode_certs_only,
        Pkcs7Error,
    ),
    "multipart-core": (
        ["rfc9148/A3-skg-response.cbor"],
        multipart.decode_multipart_core,
        MultipartError,
    ),
    "multipart-mixed": (
        ["rfc7030/A4-serverkeygen-response.multipart.txt"],
        use_mixed,
        MultipartError,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_mutated_input_raises_only_the_codec_error(name):
    seed_files, decode, error = CASES[name]
    refused = 0
    for data in mutations(seed_files, seed=len(name)):
        try:
            decode(data)
        except error:
            refused += 1
    # The mutations are not all harmless: most inputs must have been refused.
    assert refused > ROUNDS // 10
