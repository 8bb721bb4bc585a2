"""The TLS 1.2 PRF of the compact record layer (RFC 5246 s5) against OpenSSL's own,
`openssl kdf TLS1-PRF`: the key block of every compact session comes from it."""

from __future__ import annotations

import os
import subprocess

import pytest

from estcoap.dtls.record_layer import prf_sha256
from tests.conftest import require

require("openssl", "the PRF is checked against openssl kdf")


def openssl_prf(secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    done = subprocess.run(
        ["openssl", "kdf", "-keylen", str(length), "-kdfopt", "digest:SHA256"]
        + ["-kdfopt", f"hexsecret:{secret.hex()}", "-kdfopt", f"hexseed:{(label + seed).hex()}"]
        + ["TLS1-PRF"],
        capture_output=True,
        text=True,
        check=True,
    )
    return bytes.fromhex(done.stdout.strip().replace(":", ""))


@pytest.mark.parametrize("length", [1, 32, 40, 48, 72, 100])
def test_the_prf_gives_what_openssl_gives(length: int) -> None:
    secret, seed = os.urandom(48), os.urandom(64)
    assert prf_sha256(secret, b"key expansion", seed, length) == openssl_prf(
        secret, b"key expansion", seed, length
    )
