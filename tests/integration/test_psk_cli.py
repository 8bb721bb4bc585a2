"""The PSK commands as an operator and a device use them (issue 15): `estcoap psk
add/list/remove` (exit statuses 0/1/2, the key shown once by --generate and never again),
`serve --coaps-psk` with `enroll --psk-identity/--psk-key-file`, a PSK fleet with
`simulate --psk`, and the one line every PSK option gives when DTLSSocket is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from estcoap.ca import CaPaths, Store
from tests.conftest import require

require("DTLSSocket", "PSK DTLS runs on DTLSSocket (the psk extra)")

KEY_HEX = "000102030405060708090a0b0c0d0e0f"
# Runs estcoap as if DTLSSocket were not installed: the import system finds no such module.
WITHOUT_DTLSSOCKET = (
    "import sys; sys.modules['DTLSSocket'] = None; "
    "from estcoap.cli import main; sys.exit(main(sys.argv[1:]))"
)


def estcoap(
    *args: str | Path,
    timeout: float = 120,
    without_dtlssocket: bool = False,
) -> subprocess.CompletedProcess[str]:
    command = ["-c", WITHOUT_DTLSSOCKET] if without_dtlssocket else ["-m", "estcoap.cli"]
    return subprocess.run(
        [sys.executable, *command, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_add_list_remove_and_their_exit_statuses(ca_dir: Path) -> None:
    added = estcoap("psk", "add", ca_dir, "dev-1", "--generate", "--uses", "2", "--expires", "30d")
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    assert len(bytes.fromhex(key)) == 16  # stdout is the key alone, for a script to take
    assert "added PSK identity 'dev-1' for CN=dev-1: 2 use(s), until 20" in added.stderr
    with Store.open(CaPaths.of(ca_dir).store, create=False) as store:
        assert store.psk_usable_key("dev-1") == bytes.fromhex(key)

    bound = estcoap(
        "psk",
        "add",
        ca_dir,
        "dev-2",
        "--psk-key",
        KEY_HEX,
        "--subject",
        "serialNumber=dev-2,CN=dev-2",
    )
    assert bound.returncode == 0 and KEY_HEX not in bound.stdout + bound.stderr

    listing = estcoap("psk", "list", ca_dir)
    assert listing.returncode == 0
    assert key not in listing.stdout and KEY_HEX not in listing.stdout  # keys never listed
    assert "serialNumber=dev-2,CN=dev-2" in listing.stdout and "usable" in listing.stdout

    # --key, as the issue spelt it, is accepted for --psk-key
    assert estcoap("psk", "add", ca_dir, "dev-3", "--key", KEY_HEX).returncode == 0
    again = estcoap("psk", "add", ca_dir, "dev-2", "--psk-key", KEY_HEX)
    assert again.returncode == 1 and "exists already" in again.stderr
    assert estcoap("psk", "remove", ca_dir, "dev-1").returncode == 0
    gone = estcoap("psk", "remove", ca_dir, "dev-1")
    assert gone.returncode == 1 and gone.stderr.strip() == "estcoap psk: no PSK identity 'dev-1'"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--psk-key", "0011"], "a PSK is 16 to 32 bytes (2 given)"),
        (["--psk-key", "not-hex"], "a PSK is given as hex digits"),
        (["--generate", "--expires", "yesterday"], "give a duration (30d, 12h, 90m, 2w)"),
        (["--generate", "--expires", "2001-01-01"], "is in the past"),
        (["--generate", "--subject", "CN"], "--subject:"),
        (["--generate", "--uses", "0"], "expected a positive integer"),
        ([], "one of the arguments --psk-key --psk-key-file --generate is required"),
    ],
)
def test_a_wrong_add_is_one_line_exit_2_and_adds_nothing(
    ca_dir: Path, args: list[str], message: str
) -> None:
    result = estcoap("psk", "add", ca_dir, "dev-1", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    with Store.open(CaPaths.of(ca_dir).store, create=False) as store:
        assert store.psk_list() == []


@pytest.fixture
def psk_server(ca_dir: Path) -> Iterator[tuple[str, str]]:
    """serve --coaps (certificate DTLS) and --coaps-psk: (certificate URL, PSK URL)."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "estcoap.cli",
            "serve",
            "--ca",
            str(ca_dir),
            "--coaps",
            "127.0.0.1:0",
            "--coaps-psk",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        cert_url = process.stdout.readline().split()[-1]
        psk_line = process.stdout.readline()
        assert "PSK DTLS" in psk_line, psk_line
        yield cert_url, psk_line.split()[-1]
    finally:
        process.terminate()
        process.wait(30)


def test_a_device_enrolls_with_its_key_file_then_renews(
    ca_dir: Path, tmp_path: Path, psk_server: tuple[str, str]
) -> None:
    cert_url, psk_url = psk_server
    key_file = tmp_path / "dev.psk"
    key_file.write_text(KEY_HEX + "\n")
    assert estcoap("psk", "add", ca_dir, "dev-1", "--psk-key-file", key_file).returncode == 0
    enroll = [
        "enroll",
        psk_url,
        "--psk-identity",
        "dev-1",
        "--psk-key-file",
        key_file,
        "--key",
        tmp_path / "dev.key",
        "--out",
        tmp_path / "dev.pem",
    ]
    first = estcoap(*enroll)
    assert first.returncode == 0, first.stderr
    assert "wrote CN=dev-1" in first.stdout
    second = estcoap(*enroll[:-1], tmp_path / "again.pem", "--timeout", "10")
    assert second.returncode == 1
    assert "PSK DTLS handshake refused for identity 'dev-1'" in second.stderr
    renewed = estcoap(
        "reenroll",
        cert_url,
        "--trust",
        CaPaths.of(ca_dir).ca_cert,
        "--client-cert",
        tmp_path / "dev.pem",
        "--client-key",
        tmp_path / "dev.key",
        "--out",
        tmp_path / "renewed.pem",
    )
    assert renewed.returncode == 0, renewed.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--psk-identity", "d"], "--psk-identity needs --psk-key HEX or --psk-key-file FILE"),
        (["--psk-key", KEY_HEX], "--psk-key and --psk-key-file need --psk-identity"),
        (["--psk-identity", "d", "--psk-key", "xyz"], "a PSK is given as hex digits"),
    ],
)
def test_wrong_client_psk_options_are_one_line_exit_2(args: list[str], message: str) -> None:
    result = estcoap("cacerts", "coaps://127.0.0.1:9", *args)
    assert result.returncode == 2 and message in result.stderr
    https = estcoap("cacerts", "https://127.0.0.1:9", "--psk-identity", "d", "--psk-key", KEY_HEX)
    assert https.returncode == 2 and "a PSK is for coaps://" in https.stderr


def test_a_psk_fleet_enrolls_and_renews(ca_dir: Path, psk_server: tuple[str, str]) -> None:
    cert_url, psk_url = psk_server
    run = estcoap(
        "simulate",
        psk_url.removesuffix("/.well-known/est"),
        "--trust",
        CaPaths.of(ca_dir).ca_cert,
        "--psk",
        "--ca",
        ca_dir,
        "--devices",
        "12",
        "--concurrency",
        "4",
        "--reenroll",
        "--reenroll-url",
        cert_url,
        "--timeout",
        "20",
    )
    assert run.returncode == 0, run.stderr
    assert "12/12 devices provisioned" in run.stdout
    with Store.open(CaPaths.of(ca_dir).store, create=False) as store:
        issued = store.issued_list()
        assert store.psk_list() == []  # the run's keys are gone afterwards
    by_psk = [r for r in issued if r.requester.startswith("psk:psk-")]
    renewals = [r for r in issued if r.kind != "new" and r.requester.startswith("cert:")]
    assert len(by_psk) == 12 and len(renewals) == 12


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--ca", "CA", "--coaps-psk", "127.0.0.1:0"],
        ["cacerts", "coaps://127.0.0.1:9", "--psk-identity", "d", "--psk-key", KEY_HEX],
        ["simulate", "coaps://127.0.0.1:9", "--trust", "CA/ca.pem", "--psk", "--ca", "CA"],
    ],
)
def test_without_dtlssocket_psk_options_say_how_to_install_it(
    ca_dir: Path, args: list[str]
) -> None:
    args = [str(ca_dir) if a == "CA" else a.replace("CA/", f"{ca_dir}/") for a in args]
    result = estcoap(*args, without_dtlssocket=True, timeout=60)
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "PSK DTLS needs DTLSSocket: pip install 'estcoap[psk]'" in line
    assert "apt-get install autoconf automake libtool gcc" in line
