"""Shared pieces of the PKCS#11 tests (test_hsm_*.py): one throwaway SoftHSM2 token.

SoftHSM2 reads its configuration (SOFTHSM2_CONF) once, when a process first loads the
library, so every test module of a run uses the same token: the first `token` fixture
makes it and the others get it from _MADE. Each test puts its keys under labels of its
own.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from estcoap.ca.pkcs11key import PIN_ENV
from tests.conftest import require

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
