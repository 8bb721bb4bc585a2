"""Shared pieces of the PKCS#11 tests (test_hsm_*.py): one throwaway SoftHSM2 token, a CA
whose key is generated in it, and the fault a test injects (every session closed).

SoftHSM2 reads its configuration (SOFTHSM2_CONF) once, when a process first loads the
library, so every test module of a run uses the same token: the first `token` fixture
makes it and the others get it from _MADE. Each test puts its keys under labels of its
own.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from estcoap.ca import CaPaths, init_ca
from estcoap.ca.pkcs11key import PIN_ENV, Pkcs11EcKey
from estcoap.ca.signer import PinSource
from estcoap.idevid import DeviceMaker
from tests.conftest import require
from tests.integration.coaps_fixtures import Deployment

SOFTHSM_UTIL = require("softhsm2-util", "SoftHSM2 holds the test token (apt install softhsm2)")
require("pkcs11", "python-pkcs11 talks to the token (pip install 'estcoap[hsm]')")
MODULE = next(
    (
        path
        for path in (
            "/usr/lib/softhsm/libsofthsm2.so",
            "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
            "/usr/local/lib/softhsm/libsofthsm2.so",
        )
        if Path(path).is_file()
    ),
    None,
)
PIN, SO_PIN = "318273", "90817263"
TOKEN = "estca-test"

OPENSSL = require("openssl", "openssl verifies what the token signed")

_MADE: list[Path] = []


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run's SoftHSM2 token (its directory), made on first use."""
    if MODULE is None:
        pytest.fail("libsofthsm2.so not found although softhsm2-util is installed")
    if _MADE:
        os.environ["SOFTHSM2_CONF"] = str(_MADE[0] / "softhsm2.conf")
        return _MADE[0]
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        [
            str(SOFTHSM_UTIL),
            "--init-token",
            "--free",
            "--label",
            TOKEN,
            "--so-pin",
            SO_PIN,
            "--pin",
            PIN,
        ],
        check=True,
        capture_output=True,
    )
    _MADE.append(root)
    return root


@pytest.fixture(name="pin")
def pin_fixture(monkeypatch: pytest.MonkeyPatch, token: Path) -> str:
    monkeypatch.setenv(PIN_ENV, PIN)  # how LocalCA.open finds it (as serve without --pin-file)
    return PIN


def token_ca(root: Path, label: str, key_type: str = "ec-p256") -> CaPaths:
    root.mkdir(parents=True, exist_ok=True)
    pin_file = root / "pin"
    pin_file.write_text(PIN + "\n")
    return init_ca(
        root / "ca",
        ["127.0.0.1", "localhost"],
        key_type,
        key_uri=f"pkcs11:token={TOKEN};object={label}",
        pins=PinSource(pin_file=pin_file, module=MODULE),
    )


def openssl_verify(ca_pem: Path, cert: x509.Certificate, scratch: Path) -> None:
    leaf = scratch / f"leaf-{cert.serial_number:x}.pem"
    leaf.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    done = subprocess.run(
        [str(OPENSSL), "verify", "-CAfile", str(ca_pem), str(leaf)], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip().endswith(": OK"), done.stdout + done.stderr


def deployment_on_token(root: Path, label: str) -> Deployment:
    paths = token_ca(root, label)
    maker = DeviceMaker.create()
    maker_pem = root / "maker.pem"
    maker_pem.write_bytes(maker.certificate.public_bytes(serialization.Encoding.PEM))
    return Deployment(root, paths, maker, maker_pem)


def close_all_sessions(key: Pkcs11EcKey) -> None:
    """What an unplugged or reset token does to the server: every session of this
    process on the token's slot closed, through the PKCS#11 library itself."""
    import pkcs11

    library = ctypes.CDLL(MODULE)  # the same loaded library: dlopen hands back its handle
    slot = pkcs11.lib(MODULE).get_token(token_label=TOKEN).slot.slot_id
    assert library.C_CloseAllSessions(ctypes.c_ulong(slot)) == 0
