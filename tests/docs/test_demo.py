"""`estcoap demo` (what ./scripts/demo runs after installing): it enrolls over both fronts
and keeps the files it made where its output says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

pytestmark = pytest.mark.timeout(120)


def test_demo_keeps_its_files_and_says_where(tmp_path: Path) -> None:
    env = dict(os.environ, TMPDIR=str(tmp_path))  # where its default directory goes
    done = subprocess.run(
        [sys.executable, "-m", "estcoap.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=100,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    said = [line for line in done.stdout.splitlines() if line.startswith("files     kept in ")]
    assert len(said) == 1, done.stdout
    workdir = Path(said[0].removeprefix("files     kept in ").rstrip(":"))
    assert workdir.parent == tmp_path and workdir.is_dir()
    ca = x509.load_pem_x509_certificate((workdir / "ca" / "ca.pem").read_bytes())
    for stem in ("ldevid", "ldevid-renewed", "https-device", "idevid", "maker"):
        cert = x509.load_pem_x509_certificate((workdir / f"{stem}.pem").read_bytes())
        if stem.startswith(("ldevid", "https")):
            assert cert.issuer == ca.subject, stem
    for key in ("ldevid.key", "https-device.key", "idevid.key", "maker.key"):
        assert (workdir / key).stat().st_mode & 0o777 == 0o600, key
    # the certificate printed last is the renewed one it kept
    renewed = (workdir / "ldevid-renewed.pem").read_text()
    assert done.stdout.endswith(renewed), done.stdout[-800:]
