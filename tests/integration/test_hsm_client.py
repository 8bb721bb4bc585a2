"""Keys in a PKCS#11 token wherever the client takes a key (issue 19): `enroll --key URI`
signs its CSR in the token, `--client-key URI` authenticates TLS through OpenSSL's pkcs11
engine, `idevid issue --maker-key URI` signs IDevIDs there, and `ca issue-ocsp
--key-uri` puts the OCSP responder's key in the token. Every other option that takes a key
file refuses a URI in one line.

Real processes: `estcoap serve` in front of a CA in files, the client commands as a user
types them, `openssl ocsp` as the relying party. The keys are generated in the run's
SoftHSM2 token (tests/integration/hsm_fixtures.py) and never leave it. What a user gets
wrong (a key that is not there, a wrong PIN, a token key over coaps://, an output named
like a URI) is one line, and no file appears.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from estcoap.ca import CaPaths
from estcoap.ca.ocsp import OcspResponder, store_lookup
from estcoap.ca.ocsp_token import load_responder
from estcoap.ca.pkcs11key import (
    PIN_ENV,
    Pkcs11EcKey,
    TokenKeyFailed,
    find_token_key,
    generate_in_token,
    key_attributes,
)
from estcoap.ca.pkcs11uri import Pkcs11Uri, parse
from estcoap.ca.signer import PinSource
from estcoap.ca.store import Store
from tests.conftest import missing, require
from tests.integration import hsm_fixtures
from tests.integration.serve_procs import Running, running

pytestmark = pytest.mark.timeout(240)

OPENSSL = require("openssl", "openssl checks what the token signed")
MODULE, PIN, TOKEN = hsm_fixtures.MODULE, hsm_fixtures.PIN, hsm_fixtures.TOKEN
token = hsm_fixtures.token  # the run's one token
CLI = [sys.executable, "-m", "estcoap.cli"]


def _engine_present() -> bool:
    said = subprocess.run([str(OPENSSL), "version", "-e"], capture_output=True, text=True)
    engines = said.stdout.partition('ENGINESDIR: "')[2].partition('"')[0]
    return Path(engines, "pkcs11.so").is_file()


if not _engine_present():
    missing("pkcs11.so", "OpenSSL's pkcs11 engine (apt install libengine-pkcs11-openssl)")


def est(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI with the PIN from its file only (no ESTCOAP_PKCS11_PIN, no terminal)."""
    env = {k: v for k, v in os.environ.items() if k != PIN_ENV}
    return subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def ok(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    done = est(*args, cwd=cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def one_line(done: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert done.returncode != 0, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def token_key(label: str) -> tuple[str, object]:
    """A P-256 key generated in the token under label (and an id of its own, which the
    engine pairs keys by): its URI and its public key."""
    assert MODULE is not None
    public = generate_in_token(
        Pkcs11Uri(TOKEN, label, secrets.token_bytes(8)), MODULE, PIN, "ec-p256"
    )
    return f"pkcs11:token={TOKEN};object={label}", public


def unique(name: str) -> str:
    return f"{name}-{secrets.token_hex(4)}"  # one token serves every test of the run


def leaf(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


@pytest.fixture(name="pin_file")
def pin_file_fixture(tmp_path: Path, token: Path) -> Path:
    path = tmp_path / "token.pin"
    path.write_text(PIN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(name="ca")
def ca_fixture(tmp_path: Path, token: Path) -> Path:
    ca = tmp_path / "ca"
    ok("ca", "init", ca, "--hostname", "127.0.0.1")
    return ca


def _serving(what: str):  # type: ignore[no-untyped-def]
    return lambda run: what in run.urls


@pytest.fixture(name="https_url")
def https_url_fixture(ca: Path) -> Iterator[str]:
    with running(
        "serve", "--ca", ca, "--https", "127.0.0.1:0", "--user", "alice:pw",
        ready=_serving("https"),
        what="serve --https",
    ) as serve:  # fmt: skip
        yield serve.urls["https"]


def token_options(pin_file: Path) -> list[str | Path]:
    assert MODULE is not None
    return ["--pin-file", pin_file, "--pkcs11-module", MODULE]


def test_enroll_with_the_key_in_a_token_then_reenroll_authenticated_by_it(
    ca: Path, https_url: str, pin_file: Path, tmp_path: Path
) -> None:
    uri, public = token_key(unique("device"))
    trust = ["--trust", ca / "ca.pem"]
    ok(
        "enroll", https_url, *trust, "--user", "alice:pw", "--key", uri,
        "--subject", "CN=dev-hsm", "--out", tmp_path / "dev.pem", "--pop",
        *token_options(pin_file),
    )  # fmt: skip
    cert = leaf(tmp_path / "dev.pem")
    assert cert.public_key() == public
    assert cert.subject.rfc4514_string() == "CN=dev-hsm"

    # Renew: the TLS client certificate is the only credential, its key in the token
    # (the engine), and the renewal's CSR signed by the same key (python-pkcs11).
    ok(
        "reenroll", https_url, *trust, "--client-cert", tmp_path / "dev.pem",
        "--client-key", uri, "--out", tmp_path / "renewed.pem", "--pop",
        *token_options(pin_file),
    )  # fmt: skip
    renewed = leaf(tmp_path / "renewed.pem")
    assert renewed.public_key() == public and renewed.subject == cert.subject
    assert renewed.serial_number != cert.serial_number
    # serverkeygen, authenticated the same way: the new key is the server's, in a file.
    ok(
        "serverkeygen", https_url, *trust, "--client-cert", tmp_path / "renewed.pem",
        "--client-key", uri, "--subject", "CN=dev-hsm", "--out", tmp_path / "skg.pem",
        "--out-key", tmp_path / "skg.key", *token_options(pin_file),
    )  # fmt: skip
    assert leaf(tmp_path / "skg.pem").public_key() != public
    for issued in ("dev.pem", "renewed.pem"):
        hsm_fixtures.openssl_verify(ca / "ca.pem", leaf(tmp_path / issued), tmp_path)

    # Rekey into another token key, authenticated by the first.
    second, second_public = token_key(unique("device-next"))
    ok(
        "reenroll", https_url, *trust, "--client-cert", tmp_path / "renewed.pem",
        "--client-key", uri, "--key", second, "--out", tmp_path / "rekeyed.pem",
        *token_options(pin_file),
    )  # fmt: skip
    assert leaf(tmp_path / "rekeyed.pem").public_key() == second_public

    assert MODULE is not None
    label = uri.rpartition("object=")[2]
    attributes = key_attributes(Pkcs11Uri(TOKEN, label), MODULE, PIN)
    assert attributes["sensitive"] and not attributes["extractable"]
    # The client wrote certificates only: no key came out of the token.
    written = [p for p in tmp_path.iterdir() if p.is_file()]
    assert {"dev.pem", "renewed.pem", "rekeyed.pem"} <= {p.name for p in written}
    for path in written:
        if path.name != "skg.key":  # the server-generated key, asked for
            assert b"PRIVATE KEY" not in path.read_bytes(), path


def test_a_key_that_is_not_there_or_a_wrong_pin_is_one_line_and_no_file(
    ca: Path, https_url: str, pin_file: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    absent = f"pkcs11:token={TOKEN};object={unique('never-made')}"
    enroll = ["enroll", https_url, "--trust", ca / "ca.pem", "--user", "alice:pw"]
    line = one_line(
        est(*enroll, "--key", absent, "--out", "c.pem", *token_options(pin_file), cwd=work),
        "--key",
        "no private key with that label/id in the token",
    )
    assert "created" not in line
    wrong_pin = tmp_path / "wrong.pin"
    wrong_pin.write_text("000000\n")
    uri, _ = token_key(unique("device-pin"))
    one_line(
        est(*enroll, "--key", uri, "--out", "c.pem", *token_options(wrong_pin), cwd=work),
        "--key",
        "wrong PIN",
    )
    no_module = est(*enroll, "--key", uri, "--out", "c.pem", "--pin-file", pin_file, cwd=work)
    one_line(no_module, "--key", "which PKCS#11 library?")
    # A URI where a file is written is refused, not made into a file name.
    one_line(
        est(*enroll, "--key", uri, "--out", uri, *token_options(pin_file), cwd=work),
        "--out takes a file, not a pkcs11: URI: it names a file to write",
    )
    # A PIN in the URI is refused and never repeated.
    one_line(
        est(*enroll, "--key", uri + "?pin-value=1234", "--out", "c.pem", cwd=work),
        "pin-value is refused",
    )
    assert "1234" not in est(*enroll, "--key", uri + "?pin-value=1234", "--out", "c.pem").stderr
    assert list(work.iterdir()) == []


def test_a_token_client_key_over_coaps_is_refused_in_one_line(
    ca: Path, pin_file: Path, tmp_path: Path
) -> None:
    uri, _ = token_key(unique("device-dtls"))
    done = est(
        "enroll", "coaps://127.0.0.1:5684", "--trust", ca / "ca.pem",
        "--client-cert", ca / "server.pem", "--client-key", uri,
        "--key", tmp_path / "new.key", "--out", tmp_path / "c.pem",
        *token_options(pin_file),
    )  # fmt: skip
    one_line(done, "--client-key", "cannot authenticate DTLS", "no PKCS#11 engine")
    assert not (tmp_path / "new.key").exists() and not (tmp_path / "c.pem").exists()


def _ocsp_ready(run: Running) -> bool:
    return any(line.startswith("serving OCSP on ") for line in run.stdout)


def test_ocsp_responses_signed_by_a_responder_key_in_the_token(
    ca: Path, pin_file: Path, tmp_path: Path
) -> None:
    label = unique("ocsp")
    done = ok(
        "ca", "issue-ocsp", ca, "--key-uri", f"pkcs11:token={TOKEN};object={label}",
        *token_options(pin_file),
    )  # fmt: skip
    assert "(in the token" in done.stdout
    assert (ca / "ocsp.uri").is_file() and not (ca / "ocsp.key").exists()
    reference = (ca / "ocsp.uri").read_text()
    assert f"object={label}" in reference and PIN not in reference
    responder = leaf(ca / "ocsp.pem")
    assert MODULE is not None
    attributes = key_attributes(Pkcs11Uri(TOKEN, label), MODULE, PIN)
    assert attributes["sensitive"] and not attributes["extractable"]

    server = tmp_path / "server-leaf.pem"
    server.write_bytes(leaf(ca / "server.pem").public_bytes(serialization.Encoding.PEM))
    with running(
        "serve", "--ca", ca, "--https", "127.0.0.1:0", "--ocsp", "127.0.0.1:0",
        *token_options(pin_file),
        ready=_ocsp_ready,
        what="serve --ocsp",
    ) as serve:  # fmt: skip
        line = next(x for x in serve.stdout if x.startswith("serving OCSP on "))
        assert "delegated responder" in line
        url = line.split()[3]
        said = subprocess.run(
            [
                str(OPENSSL), "ocsp", "-issuer", ca / "ca.pem", "-CAfile", ca / "ca.pem",
                "-url", url, "-cert", server, "-resp_text",
            ],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        out = said.stdout + said.stderr
        assert said.returncode == 0, out
        assert f"{server}: good" in out and "Response verify OK" in out
        # The responder's certificate (its key in the token) signed it, not the CA.
        assert "Subject: CN=estcoap OCSP responder" in out
        assert format(responder.serial_number, "x") in out.replace(":", "").lower()

    # Back to a key file: the token reference goes, so the two never disagree.
    ok("ca", "issue-ocsp", ca)
    assert (ca / "ocsp.key").is_file() and not (ca / "ocsp.uri").exists()
    # Both at once is refused, not settled by whichever a command looks at first.
    (ca / "ocsp.uri").write_text(reference)
    with pytest.raises(ValueError, match="has both ocsp.key and ocsp.uri"):
        load_responder(CaPaths.of(ca), PinSource(pin_file=pin_file, module=MODULE))


def test_issue_ocsp_refuses_a_taken_label_in_one_line(ca: Path, pin_file: Path) -> None:
    uri, _ = token_key(unique("taken"))
    done = est("ca", "issue-ocsp", ca, "--key-uri", uri, *token_options(pin_file))
    one_line(done, "already holds a key labelled")
    assert not (ca / "ocsp.uri").exists() and not (ca / "ocsp.pem").exists()


def test_idevid_issue_signs_with_a_maker_key_in_the_token(pin_file: Path, tmp_path: Path) -> None:
    assert MODULE is not None
    uri, _ = token_key(unique("maker"))
    key = find_token_key(parse(uri), MODULE, PIN)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "maker in a token")])
    now = dt.datetime.now(dt.UTC)
    maker = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "maker.pem").write_bytes(maker.public_bytes(serialization.Encoding.PEM))
    ok(
        "idevid", "issue", "--maker-cert", tmp_path / "maker.pem", "--maker-key", uri,
        "--serial", "dev-77", "--out-cert", tmp_path / "dev.pem", "--out-key", tmp_path / "dev.key",
        *token_options(pin_file),
    )  # fmt: skip
    hsm_fixtures.openssl_verify(tmp_path / "maker.pem", leaf(tmp_path / "dev.pem"), tmp_path)


def test_options_that_take_a_key_file_refuse_a_uri_in_one_line(ca: Path, tmp_path: Path) -> None:
    """Where a key cannot be in a token, or a file is written, a pkcs11: URI is a wrong
    command line (exit 2), never a file name read or created."""
    work = tmp_path / "work"
    work.mkdir()
    uri = f"pkcs11:token={TOKEN};object=anything"
    url = "https://127.0.0.1:9/.well-known/est"
    cases: list[tuple[list[str | Path], str]] = [
        (["idevid", "maker", "--out-cert", "m.pem", "--out-key", uri], "--out-key"),
        (
            [
                "idevid",
                "issue",
                "--maker-cert",
                ca / "ca.pem",
                "--maker-key",
                ca / "ca.key",
                "--serial",
                "d1",
                "--out-cert",
                "d.pem",
                "--out-key",
                uri,
            ],
            "--out-key",
        ),  # fmt: skip
        (["ca", "issue-ra", ca, "--out-cert", "ra.pem", "--out-key", uri], "--out-key"),
        (
            ["serverkeygen", url, "--trust", ca / "ca.pem", "--out", "c.pem", "--out-key", uri],
            "--out-key",
        ),
        (
            [
                "simulate",
                url,
                "--trust",
                ca / "ca.pem",
                "--maker-cert",
                ca / "ca.pem",
                "--maker-key",
                uri,
            ],
            "--maker-key",
        ),  # fmt: skip
        (
            [
                "simulate",
                url,
                "--trust",
                ca / "ca.pem",
                "--maker-cert",
                ca / "ca.pem",
                "--maker-key",
                ca / "ca.key",
                "--keys-dir",
                uri,
            ],
            "--keys-dir",
        ),  # fmt: skip
        (["psk", "add", ca, "dev-psk", "--psk-key-file", uri], "--psk-key-file"),
        (
            [
                "enroll",
                "coaps://127.0.0.1:9",
                "--psk-identity",
                "d",
                "--psk-key-file",
                uri,
                "--key",
                "k.pem",
                "--out",
                "c.pem",
            ],
            "--psk-key-file",
        ),  # fmt: skip
        (["serve", "--ca", ca, "--https", "127.0.0.1:0", "--shared-keys", uri], "--shared-keys"),
    ]
    for args, option in cases:
        done = est(*args, cwd=work)
        assert done.returncode == 2, (args, done.stderr)
        one_line(done, option, "takes a file, not a pkcs11: URI")
    assert list(work.iterdir()) == []


def test_token_keys_that_fail_mid_use_say_so_and_recover(
    ca: Path, pin_file: Path, tmp_path: Path
) -> None:
    """The session closed under the keys (a token reset): a device's key fails its next
    signature with a line naming it (no retry to ask for, no log), the OCSP responder
    answers tryLater (RFC 6960 s2.3); both re-open the session for the next one."""
    assert MODULE is not None
    uri, public = token_key(unique("device-reset"))
    device_key = find_token_key(parse(uri), MODULE, PIN, what="--key")
    ok(
        "ca", "issue-ocsp", ca, "--key-uri", f"pkcs11:token={TOKEN};object={unique('ocsp-reset')}",
        *token_options(pin_file),
    )  # fmt: skip
    paths = CaPaths.of(ca)
    responder = load_responder(paths, PinSource(pin_file=pin_file, module=MODULE))
    assert isinstance(responder.key, Pkcs11EcKey)
    ca_cert, ca_key = paths.load_ca()
    store = Store.open(paths.store_location(), create=False)
    try:
        ocsp_responder = OcspResponder(
            ca_cert,
            ca_key,  # type: ignore[arg-type]
            store_lookup(store),
            signer_cert=responder.certificate,
            signer_key=responder.key,
        )
        request = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(leaf(ca / "server.pem"), ca_cert, hashes.SHA256())
            .build()
            .public_bytes(serialization.Encoding.DER)
        )

        def status() -> ocsp.OCSPResponseStatus:
            return ocsp.load_der_ocsp_response(ocsp_responder.respond(request)).response_status

        assert status() == ocsp.OCSPResponseStatus.SUCCESSFUL
        device_key.sign(b"before", ec.ECDSA(hashes.SHA256()))
        hsm_fixtures.close_all_sessions(responder.key)

        with pytest.raises(TokenKeyFailed, match=r"^--key pkcs11:.*: signature failed"):
            device_key.sign(b"during", ec.ECDSA(hashes.SHA256()))
        assert status() == ocsp.OCSPResponseStatus.TRY_LATER

        signature = device_key.sign(b"after", ec.ECDSA(hashes.SHA256()))
        public.verify(signature, b"after", ec.ECDSA(hashes.SHA256()))  # type: ignore[attr-defined]
        assert status() == ocsp.OCSPResponseStatus.SUCCESSFUL
    finally:
        store.close()


def test_enroll_with_an_rsa_key_in_the_token(
    ca: Path, https_url: str, pin_file: Path, tmp_path: Path
) -> None:
    """An RSA key's public half is read from the private key object itself (its modulus
    and exponent), an EC key's from the public key object of its id: both work."""
    assert MODULE is not None
    label = unique("device-rsa")
    public = generate_in_token(
        Pkcs11Uri(TOKEN, label, secrets.token_bytes(8)), MODULE, PIN, "rsa-3072"
    )
    ok(
        "enroll", https_url, "--trust", ca / "ca.pem", "--user", "alice:pw",
        "--key", f"pkcs11:token={TOKEN};object={label}", "--subject", "CN=dev-rsa",
        "--out", tmp_path / "rsa.pem", *token_options(pin_file),
    )  # fmt: skip
    assert leaf(tmp_path / "rsa.pem").public_key() == public
