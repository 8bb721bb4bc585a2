"""The CLI as a newcomer meets it: one way to name a CA directory, options that show their
defaults, the verbs one looks for (ca show/export, users list/remove), and bad input
answered in one line with the documented exit status (1 failed, 2 wrong command line),
never a traceback. Each command runs in a subprocess, as a user runs it."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from estcoap.cli import all_parsers, build_parser, shows_default
from tests.conftest import missing

pytestmark = pytest.mark.timeout(120)

CLI = [sys.executable, "-m", "estcoap.cli"]


def run(*args: str | Path, input: str | None = None, cwd: Path | None = None):  # type: ignore[no-untyped-def]
    return subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=90,
        input=input,
        cwd=cwd,
    )


def ok(*args: str | Path, input: str | None = None) -> subprocess.CompletedProcess[str]:
    done = run(*args, input=input)
    assert done.returncode == 0, done.stderr
    return done


def one_line(done: subprocess.CompletedProcess[str], status: int, *fragments: str) -> str:
    """Exit status as documented, exactly one line on stderr, no traceback."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert done.returncode == status, (done.returncode, done.stderr)
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(name="ca", scope="module")
def ca_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ca = tmp_path_factory.mktemp("cli") / "ca"
    ok("ca", "init", ca, "--hostname", "127.0.0.1")
    return ca


def _serial(ca: Path) -> str:
    return ok("ca", "issued", ca).stdout.splitlines()[1].split()[0]


def _other_key(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


# ---- --help and --version -----------------------------------------------------------


def test_every_option_shows_its_default_in_help() -> None:
    checked = 0
    for parser in all_parsers(build_parser()):
        # as wrapped (also after a hyphen), joined again
        text = " ".join(re.sub(r"-\n\s*", "-", parser.format_help()).split())
        for action in parser._actions:
            if not shows_default(action):
                continue
            assert f"default: {action.default}" in text, (parser.prog, action.option_strings)
            checked += 1
    assert checked > 40  # the walk reached the subcommands' options


def test_help_of_each_subcommand_runs_and_names_defaults() -> None:
    for args, expected in (
        (("serve",), "--approval {auto,manual}"),
        (("simulate",), "--devices N"),
        (("enroll",), "--max-pending-wait SECONDS"),
    ):
        done = ok(*args, "--help")
        text = " ".join(done.stdout.split())
        assert expected in text and "(default: " in text


def test_version() -> None:
    done = ok("--version")
    assert done.stdout.strip() == f"estcoap {importlib.metadata.version('estcoap')}"


# ---- the CA directory: first positional argument; --ca DIR still works ----------------


def test_ca_directory_positional_and_deprecated_flag(ca: Path) -> None:
    new = ok("ca", "issued", ca)
    assert new.stderr == "" and "CN=127.0.0.1" in new.stdout
    old = ok("ca", "issued", "--ca", ca)
    assert old.stdout == new.stdout
    assert old.stderr.strip() == "note: use 'estcoap ca issued DIR' (--ca DIR is deprecated)"

    assert ok("pending", "list", ca).stdout.strip() == "(none)"
    old = ok("pending", "list", "--ca", ca, "--state", "pending")
    assert old.stdout.strip() == "(none)" and "'estcoap pending list DIR'" in old.stderr

    one_line(run("pending", "approve", ca, "7"), 1, "no request with id 7")
    deprecated = run("pending", "deny", "7", "--ca", ca)
    assert deprecated.returncode == 1
    assert deprecated.stderr.splitlines() == [
        "note: use 'estcoap pending deny DIR ID' (--ca DIR is deprecated)",
        "estcoap pending: no request with id 7",
    ]
    one_line(run("ca", "issued"), 2, "the CA directory is missing: estcoap ca issued DIR")
    one_line(run("pending", "approve", "7"), 2, "estcoap pending approve DIR ID")
    one_line(run("pending", "list", ca, "--ca", ca), 2, "give the CA directory once")


# ---- ca show, ca export --------------------------------------------------------------


def test_ca_show_describes_one_certificate(ca: Path) -> None:
    serial = _serial(ca)
    shown = ok("ca", "show", ca, serial).stdout
    fields = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in shown.splitlines())
    cert = x509.load_pem_x509_certificates((ca / "server.pem").read_bytes())[0]
    assert fields["serial"] == format(cert.serial_number, "x") == serial
    assert fields["subject"] == "CN=127.0.0.1"
    assert fields["SAN"] == "IPAddress:127.0.0.1"
    assert fields["operation"] == "init" and fields["kind"] == "new"
    assert fields["requester"] == "ca init" and fields["renewed from"] == "-"
    assert fields["label"] == "-"
    assert cert.not_valid_after_utc.isoformat()[:19] in fields["valid"]
    # colons and upper case, as other tools print serials
    spaced = ":".join(re.findall("..", serial.zfill(len(serial) + len(serial) % 2))).upper()
    assert ok("ca", "show", ca, spaced).stdout == shown


def test_ca_show_and_export_refuse_unknown_or_malformed_serials(ca: Path, tmp_path: Path) -> None:
    for verb in ("show", "export"):
        one_line(run("ca", verb, ca, "abc123"), 1, "no certificate with serial abc123")
        one_line(run("ca", verb, ca, "not-hex"), 2, "'not-hex' is not hexadecimal")
        one_line(run("ca", verb, tmp_path / "nowhere", "abc"), 1, "estcoap ca init")


def test_ca_export_pem_to_stdout_and_der_to_a_file(ca: Path, tmp_path: Path) -> None:
    serial = _serial(ca)
    issued = x509.load_pem_x509_certificates((ca / "server.pem").read_bytes())[0]
    pem = ok("ca", "export", ca, serial).stdout
    assert x509.load_pem_x509_certificate(pem.encode()) == issued

    out = tmp_path / "server.der"
    done = ok("ca", "export", ca, serial, "--der", "--out", out)
    assert x509.load_der_x509_certificate(out.read_bytes()) == issued
    assert str(out) in done.stdout

    missing = tmp_path / "no-such-dir" / "c.pem"
    one_line(run("ca", "export", ca, serial, "--out", missing), 1, str(missing.parent))
    assert not missing.parent.exists()


# ---- users add, list, remove ---------------------------------------------------------


def test_users_add_list_remove(tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    ok("users", "add", users, "alice", input="pw-alice\n")
    ok("users", "add", users, "bob", input="pw-bob\n")
    assert users.stat().st_mode & 0o777 == 0o600
    listed = ok("users", "list", users).stdout.splitlines()
    assert listed[0].split() == ["user", "realm", "schemes"]
    assert [line.split()[0] for line in listed[1:]] == ["alice", "bob"]
    assert "pw-" not in "".join(listed) and "scrypt" not in "".join(listed)

    done = ok("users", "remove", users, "alice")
    assert "alice removed" in done.stdout
    assert [line.split()[0] for line in ok("users", "list", users).stdout.splitlines()[1:]] == [
        "bob"
    ]
    one_line(run("users", "remove", users, "alice"), 1, f"{users}: no user 'alice'")
    one_line(run("users", "list", tmp_path / "none.txt"), 1, "none.txt", "No such file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.txt"]  # no stray .tmp


def test_users_add_checks_its_path_before_the_password(tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "users.txt"
    # No password on stdin: a command that asked for one first would fail differently.
    line = one_line(run("users", "add", target, "alice", input=""), 1, str(target))
    assert "directory" in line and ".tmp" not in line
    one_line(run("users", "add", tmp_path, "alice", input="pw\n"), 1, "is a directory")


# ---- option values: exit status 2, one line -------------------------------------------


def test_option_value_errors_exit_2(ca: Path) -> None:
    one_line(
        run("serve", "--ca", ca, "--https", "127.0.0.1:0", "--user", "alice"),
        2,
        "--user expects NAME:PASSWORD",
    )
    enroll = ["enroll", "https://127.0.0.1:1", "--key", "k", "--subject", "CN=x", "--out", "o"]
    one_line(run(*enroll, "--user", "alice"), 2, "--user needs NAME:PASSWORD")
    one_line(run("serve", "--ca", ca, "--https", "nowhere"), 2, "--https: expected HOST:PORT")
    one_line(
        run("serve", "--ca", ca, "--https", "127.0.0.1:0", "--max-body", "0"),
        2,
        "argument --max-body: expected a positive integer",
    )
    one_line(
        run("ca", "init", ca.parent / "new", "--hostname", "x", "--validity-days", "0"),
        2,
        "argument --validity-days",
    )
    one_line(
        run("pending", "approve", ca, "x"),
        2,
        "invalid int value: 'x'",
        "see 'estcoap pending approve --help'",
    )
    assert not (ca.parent / "new").exists()


def test_option_values_found_after_parsing_exit_2_too(ca: Path, tmp_path: Path) -> None:
    """Refused by the command rather than by argparse, still a wrong command line."""
    one_line(run("serve", "--ca", ca), 2, "give at least one front")
    one_line(
        run("serve", "--ca", ca, "--https", "127.0.0.1:0", "--http-auth", "ntlm"),
        2,
        "--http-auth: unknown HTTP auth scheme",
    )
    server = [
        "--server-cert",
        ca / "server.pem",
        "--server-key",
        ca / "server.key",
        "--trust-clients",
        ca / "ca.pem",
    ]
    for command, front in (("gateway", "--coaps"), ("proxy", "--https")):
        one_line(
            run(
                command,
                front,
                "127.0.0.1:0",
                *server,
                "--upstream",
                "http://127.0.0.1:9/.well-known/est",
            ),
            2,
            "--upstream: the upstream must be an https:// URL",
        )
    client = ["--key", tmp_path / "k", "--out", tmp_path / "o.pem"]
    for url in ("http://127.0.0.1:9", "coap://127.0.0.1:9"):
        one_line(run("enroll", url, "--subject", "CN=x", *client), 2, url)
    one_line(
        run("enroll", "https://127.0.0.1:9", "--subject", "device-1", *client),
        2,
        "--subject: bad subject 'device-1'",
    )
    one_line(
        run("cacerts", "https://127.0.0.1:9", "--bootstrap", "--fingerprint", "zz"),
        2,
        "--fingerprint 'zz' is not a SHA-256 fingerprint",
    )
    one_line(
        run("cacerts", "https://127.0.0.1:9", "--client-cert", ca / "server.pem"),
        2,
        "--client-cert and --client-key go together",
    )
    assert not (tmp_path / "k").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("serve", "--retry-after", "-5"), "--retry-after: expected seconds from 1 to 4294967295"),
        (("serve", "--retry-after", "0"), "--retry-after: expected seconds from 1"),
        (("serve", "--retry-after", "4294967296"), "--retry-after: expected seconds from 1"),
        (("serve", "--max-pending", "0"), "--max-pending: expected a positive integer"),
        (("serve", "--max-pending-per-requester", "-1"), "--max-pending-per-requester: expected"),
        (("serve", "--key-retention", "-1"), "--key-retention: expected seconds from 0"),
        (("serve", "--validity-days", "100000000"), "--validity-days: expected a number of days"),
        (("serve", "--max-body", "1.5"), "--max-body: expected a positive integer"),
        (("ca", "init", "x", "--hostname", "h", "--validity-days", "-1"), "--validity-days"),
        (("enroll", "https://h", "--timeout", "0"), "--timeout: expected seconds > 0"),
        (("enroll", "https://h", "--timeout", "nan"), "--timeout: expected seconds > 0"),
        (("cacerts", "https://h", "--timeout", "inf"), "--timeout: expected seconds > 0"),
        (("cacerts", "https://h", "--max-pending-wait", "-1"), "--max-pending-wait: expected sec"),
        (("gateway", "--upstream-timeout", "0"), "--upstream-timeout: expected seconds > 0"),
        (("proxy", "--upstream-connections", "0"), "--upstream-connections: expected a positive"),
        (("simulate", "coaps://h", "--devices", "0"), "--devices: expected a positive integer"),
        (("simulate", "coaps://h", "--concurrency", "x"), "--concurrency: expected a positive"),
        (("simulate", "coaps://h", "--timeout", "-1"), "--timeout: expected seconds > 0"),
        (("simulate", "coaps://h", "--loss", "1"), "--loss: expected a probability in [0, 1)"),
        (("simulate", "coaps://h", "--delay", "60001"), "--delay: expected milliseconds"),
        (("simulate", "coaps://h", "--retries", "-1"), "--retries: expected an integer >= 0"),
    ],
)
def test_numeric_options_refuse_values_out_of_range(args: tuple[str, ...], message: str) -> None:
    """Each in argparse's one line, exit status 2, before anything else is looked at (the
    required options missing here would be named otherwise)."""
    line = one_line(run(*args), 2, f"argument {message}")
    assert line.startswith(f"estcoap {' '.join(args[:2]) if args[0] == 'ca' else args[0]}: ")


# ---- listening: the address named --------------------------------------------------


@contextlib.contextmanager
def _taken_ports() -> Iterator[tuple[int, int]]:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        udp.bind(("127.0.0.1", 0))
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        yield udp.getsockname()[1], tcp.getsockname()[1]
    finally:
        udp.close()
        tcp.close()


def test_address_in_use_names_the_address(ca: Path, tmp_path: Path) -> None:
    server = ["--server-cert", ca / "server.pem", "--server-key", ca / "server.key"]
    upstream = [
        "--upstream",
        "https://127.0.0.1:9/.well-known/est",
        "--log-level",
        "error",
        "--trust-clients",
        ca / "ca.pem",
    ]
    with _taken_ports() as (udp, tcp):
        one_line(
            run("serve", "--ca", ca, "--coaps", f"127.0.0.1:{udp}"),
            1,
            f"cannot listen on 127.0.0.1:{udp} (udp): address in use",
        )
        one_line(
            run("serve", "--ca", ca, "--https", f"127.0.0.1:{tcp}"),
            1,
            f"cannot listen on 127.0.0.1:{tcp} (tcp): address in use",
        )
        one_line(
            run("gateway", "--coaps", f"127.0.0.1:{udp}", *server, *upstream),
            1,
            f"gateway: cannot listen on 127.0.0.1:{udp} (udp): address in use",
        )
        one_line(
            run("proxy", "--https", f"127.0.0.1:{tcp}", *server, *upstream),
            1,
            f"proxy: cannot listen on 127.0.0.1:{tcp} (tcp): address in use",
        )


# ---- server-side credentials ----------------------------------------------------------


def test_server_side_files_are_checked_in_one_line(ca: Path, tmp_path: Path) -> None:
    other = _other_key(tmp_path / "other.key")
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    cert, key = ca / "server.pem", ca / "server.key"
    upstream = ["--upstream", "https://127.0.0.1:9/.well-known/est", "--log-level", "error"]
    for command, front in (("gateway", "--coaps"), ("proxy", "--https")):
        base = [command, front, "127.0.0.1:0", *upstream, "--trust-clients", ca / "ca.pem"]
        one_line(
            run(*base, "--server-cert", cert, "--server-key", other),
            1,
            f"the key in {other} does not belong to the certificate in {cert}",
        )
        one_line(
            run(*base, "--server-cert", junk, "--server-key", key),
            1,
            f"--server-cert {junk}: ",
            "damaged",
        )
        one_line(
            run(*base, "--server-cert", cert, "--server-key", junk), 1, f"--server-key {junk}: "
        )
        ok_pair = ["--server-cert", cert, "--server-key", key]
        one_line(run(*base, *ok_pair, "--upstream-trust", junk), 1, f"--upstream-trust {junk}: ")
        one_line(run(*base, *ok_pair, "--ra-cert", junk, "--ra-key", key), 1, f"--ra-cert {junk}")
        one_line(run(*base, *ok_pair, "--ra-cert", cert, "--ra-key", junk), 1, f"--ra-key {junk}")
        one_line(
            run(*base, *ok_pair, "--ra-cert", cert, "--ra-key", other),
            1,
            f"the key in {other} does not belong to the certificate in {cert}",
        )
        one_line(run(*base, *ok_pair, "--ra-cert", cert), 2, "--ra-cert and --ra-key go together")


def test_gateway_without_trust_clients_names_the_flag(ca: Path) -> None:
    line = one_line(
        run(
            "gateway",
            "--coaps",
            "127.0.0.1:0",
            "--upstream",
            "https://127.0.0.1:9/",
            "--server-cert",
            ca / "server.pem",
            "--server-key",
            ca / "server.key",
            "--log-level",
            "error",
        ),
        1,
        "give --trust-clients PEM",
    )
    assert "trust_clients" not in line


def test_idevid_issue_checks_the_maker_and_outputs_first(tmp_path: Path) -> None:
    maker, maker_key = tmp_path / "maker.pem", tmp_path / "maker.key"
    ok("idevid", "maker", "--out-cert", maker, "--out-key", maker_key)
    other = _other_key(tmp_path / "other.key")
    issue = ["idevid", "issue", "--maker-cert", maker, "--serial", "SN1"]
    outputs = ["--out-cert", tmp_path / "d.pem", "--out-key", tmp_path / "d.key"]
    one_line(
        run(*issue, "--maker-key", other, *outputs),
        1,
        f"the key in {other} does not belong to the certificate in {maker}",
    )
    one_line(run(*issue, "--maker-key", tmp_path / "none.key", *outputs), 1, "--maker-key")
    lost = tmp_path / "missing" / "d.pem"
    one_line(
        run(*issue, "--maker-key", maker_key, "--out-cert", lost, "--out-key", tmp_path / "d.key"),
        1,
        str(lost.parent),
    )
    assert not (tmp_path / "d.key").exists()  # no key left without its certificate


# ---- a store that cannot be written --------------------------------------------------


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[None]:
    """chmod is enough for a user; root writes anyway, so the immutable flag (chattr)."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(mode & ~0o222)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        missing("chattr +i", "as root only the immutable flag makes a file read-only")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_read_only_store_refused_at_start(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    ok("ca", "init", ca, "--hostname", "127.0.0.1")
    with _read_only(ca / "est.sqlite3"):
        one_line(
            run("serve", "--ca", ca, "--https", "127.0.0.1:0"),
            1,
            f"the CA store {ca / 'est.sqlite3'} is read-only",
        )
        one_line(
            run(
                "ca",
                "issue-ra",
                ca,
                "--out-cert",
                tmp_path / "ra.pem",
                "--out-key",
                tmp_path / "ra.key",
            ),
            1,
            "is read-only",
        )
    assert not (tmp_path / "ra.key").exists() and not (tmp_path / "ra.pem").exists()
    with _read_only(ca):
        one_line(
            run("serve", "--ca", ca, "--coaps", "127.0.0.1:0"),
            1,
            f"the CA directory {ca} is read-only",
        )


# ---- simulate: a run where every device fails -----------------------------------------


def test_simulate_all_failed_is_visible(ca: Path, tmp_path: Path) -> None:
    maker, maker_key = tmp_path / "maker.pem", tmp_path / "maker.key"
    ok("idevid", "maker", "--out-cert", maker, "--out-key", maker_key)
    with socket.socket() as probe:  # a port with nobody listening: every device is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for maker_options in (
        ["--maker-cert", maker, "--maker-key", maker_key],
        ["--idevid-ca", maker, "--idevid-ca-key", maker_key],  # the former names still work
    ):
        done = run(
            "simulate",
            f"https://127.0.0.1:{port}",
            "--trust",
            ca / "ca.pem",
            *maker_options,
            "--devices",
            "3",
            "--retries",
            "0",
        )
        line = one_line(done, 1, "estcoap simulate: all 3 devices failed")
        assert done.stdout.splitlines()[0].startswith("0/3 devices provisioned: all 3 devices")
        assert "p50" not in done.stdout  # no latency figures made of zeros
        assert "\n" not in line
    # The JSON report (a terminal or not) says "no figure", never a zero that reads as one.
    report_path = tmp_path / "report.json"
    done = run(
        "simulate",
        f"https://127.0.0.1:{port}",
        "--trust",
        ca / "ca.pem",
        "--maker-cert",
        maker,
        "--maker-key",
        maker_key,
        "--devices",
        "2",
        "--retries",
        "0",
        "--json",
        report_path,
    )
    one_line(done, 1, "estcoap simulate: all 2 devices failed")
    report = json.loads(report_path.read_text())
    assert report["succeeded"] == 0 and report["failed_total"] == 2
    assert report["latency_ms"] == dict.fromkeys(("p50", "p95", "p99", "max", "min", "mean"))
    assert report["bytes_per_enrollment"] == {"up": None, "down": None, "total": None}
    assert report["retransmissions"]["per_enrollment"] is None
    no_key = run(
        "simulate", f"https://127.0.0.1:{port}", "--trust", ca / "ca.pem", "--maker-cert", maker
    )
    one_line(no_key, 2, "the following arguments are required: --maker-key")
