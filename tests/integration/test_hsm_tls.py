"""TLS keys in a PKCS#11 token (issue 19): the RA key the gateway and the proxy present to
the upstream EST server, and the proxy's own HTTPS server key, given as pkcs11: URIs.

Real processes throughout: an upstream `estcoap serve --https` (its CA in files), and
`estcoap gateway` / `estcoap proxy` whose keys were generated in a SoftHSM2 token (made
by the test) and never left it; they reach them through OpenSSL's pkcs11 engine
(estcoap/tls_token_key.py). A device enrolls through each and gets its certificate, which
only happens when the upstream accepted the RA's TLS client certificate: without it the
forwarded request has no credentials at all. The PIN comes from a file and is found
neither in the processes' command lines nor in anything they print.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from estcoap.ca import CaPaths, init_ca
from estcoap.ca.create import subject_alt_name
from estcoap.ca.pkcs11key import PIN_ENV, generate_in_token, key_attributes
from estcoap.ca.pkcs11uri import Pkcs11Uri
from estcoap.ca.profile import Request, random_serial, sign_end_entity
from estcoap.ca.store import Store
from estcoap.client import EstClient
from estcoap.idevid import DeviceMaker
from estcoap.trust import ID_KP_CMC_RA
from tests.conftest import missing, require
from tests.integration import hsm_fixtures
from tests.integration.coaps_fixtures import Device, write_identity
from tests.polling import wait_until

pytestmark = pytest.mark.timeout(180)

OPENSSL = require("openssl", "openssl says where OpenSSL's engines are")
MODULE, PIN, TOKEN = hsm_fixtures.MODULE, hsm_fixtures.PIN, hsm_fixtures.TOKEN
token, pin_fixture = hsm_fixtures.token, hsm_fixtures.pin_fixture  # the run's one token
CLI = [sys.executable, "-m", "estcoap.cli"]


def _engine_dir() -> Path:
    said = subprocess.run([str(OPENSSL), "version", "-e"], capture_output=True, text=True)
    found = re.search(r'ENGINESDIR: "([^"]+)"', said.stdout)
    return Path(found[1]) if found else Path("/nonexistent")


if not (_engine_dir() / "pkcs11.so").is_file():
    missing("pkcs11.so", "OpenSSL's pkcs11 engine (apt install libengine-pkcs11-openssl)")


@dataclass
class Upstream:
    """A CA in files, the serve in front of it, a device maker it trusts."""

    root: Path
    paths: CaPaths
    maker: DeviceMaker
    maker_pem: Path
    url: str = ""

    def device(self, name: str) -> Device:
        cert, key = self.maker.issue_idevid(name)
        return write_identity(self.root, name, cert, key)

    def issue_for_token_key(
        self, label: str, *, ra: bool = False, hostnames: tuple[str, ...] = ()
    ) -> tuple[str, Path]:
        """A key generated in the token under label, and a certificate for it signed by
        this CA (id-kp-cmcRA for an RA; serverAuth and a SAN with hostnames): the key's
        URI (by its label) and the chain's PEM file (leaf, then the CA)."""
        assert MODULE is not None
        # A CKA_ID of its own: libp11 pairs a private key with the public key of its id.
        key_id = label.encode()
        public = generate_in_token(Pkcs11Uri(TOKEN, label, key_id), MODULE, PIN, "ec-p256")
        ca_cert = x509.load_pem_x509_certificate(self.paths.ca_cert.read_bytes())
        ca_key = serialization.load_pem_private_key(self.paths.ca_key.read_bytes(), None)
        usages: list[x509.ObjectIdentifier] = []
        if hostnames:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if ra:
            usages += [ExtendedKeyUsageOID.CLIENT_AUTH, ID_KP_CMC_RA]
        cert = sign_end_entity(
            Request(
                subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, label)]),
                public_key=public,  # type: ignore[arg-type]
                san=subject_alt_name(hostnames) if hostnames else None,
            ),
            ca_cert=ca_cert,
            ca_key=ca_key,  # type: ignore[arg-type]
            serial=random_serial(),
            validity_days=30,
            extended_key_usage=tuple(usages),
        )
        with Store.open(self.paths.store) as store:
            store.record_issued(cert, requester="test", operation="init")
        chain = self.root / f"{label}.pem"
        chain.write_bytes(
            b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (cert, ca_cert))
        )
        return f"pkcs11:token={TOKEN};object={label}", chain


@dataclass
class Process:
    """A CLI process whose output lines are collected as they come."""

    proc: subprocess.Popen[str]
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)

    def wait_for(self, needle: str, what: str) -> str:
        wait_until(
            lambda: any(needle in line for line in self.out) or self.proc.poll() is not None,
            90,
            what,
        )
        line = next((x for x in self.out if needle in x), None)
        assert line is not None, "".join(self.out + self.err)
        return line

    def said(self) -> str:
        return "".join(self.out + self.err)

    def argv(self) -> str:
        return Path(f"/proc/{self.proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


@contextlib.contextmanager
def started(*args: str | Path) -> Iterator[Process]:
    env = {k: v for k, v in os.environ.items() if k != PIN_ENV}  # the PIN from its file only
    proc = subprocess.Popen(
        [*CLI, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    process = Process(proc)
    assert proc.stdout is not None and proc.stderr is not None
    readers = [
        threading.Thread(target=lambda s=s, into=into: into.extend(iter(s.readline, "")))
        for s, into in ((proc.stdout, process.out), (proc.stderr, process.err))
    ]
    for reader in readers:
        reader.daemon = True
        reader.start()
    try:
        yield process
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
        for reader in readers:
            reader.join(5)


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != PIN_ENV}
    return subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(name="upstream")
def upstream_fixture(tmp_path: Path, token: Path) -> Iterator[Upstream]:
    paths = init_ca(tmp_path / "up", ["127.0.0.1", "localhost"])
    maker = DeviceMaker.create()
    maker_pem = tmp_path / "maker.pem"
    maker_pem.write_bytes(maker.certificate.public_bytes(serialization.Encoding.PEM))
    up = Upstream(tmp_path, paths, maker, maker_pem)
    with started("serve", "--ca", paths.dir, "--https", "127.0.0.1:0") as serve:
        up.url = serve.wait_for("serving EST over HTTPS", "the upstream serve").split()[-1]
        yield up


@pytest.fixture(name="pin_file")
def pin_file_fixture(tmp_path: Path) -> Path:
    path = tmp_path / "token.pin"
    path.write_text(PIN + "\n")
    path.chmod(0o600)
    return path


def forwarding(
    command: str, up: Upstream, ra_uri: str, ra_chain: Path, pin_file: Path, *extra: str | Path
) -> list[str | Path]:
    """The gateway's or proxy's command line: its RA key in the token, the PIN in a file."""
    front = "--coaps" if command == "gateway" else "--https"
    return [
        command,
        front,
        "127.0.0.1:0",
        "--upstream",
        up.url,
        "--upstream-trust",
        up.paths.ca_cert,
        "--ra-cert",
        ra_chain,
        "--ra-key",
        ra_uri,
        "--pkcs11-module",
        str(MODULE),
        "--pin-file",
        pin_file,
        "--trust-clients",
        up.maker_pem,
        "--log-level",
        "info",
        *extra,
    ]


def check_issued(up: Upstream, cert: x509.Certificate, device: Device) -> None:
    done = subprocess.run(
        [str(OPENSSL), "verify", "-CAfile", str(up.paths.ca_cert), "/dev/stdin"],
        input=cert.public_bytes(serialization.Encoding.PEM).decode(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert cert.subject == device.subject("through-ra")


def check_key_stays_in_the_token(label: str) -> None:
    assert MODULE is not None
    assert key_attributes(Pkcs11Uri(TOKEN, label), MODULE, PIN) == {
        "sensitive": True,
        "extractable": False,
        "never_extractable": True,
        "always_sensitive": True,
    }


async def test_gateway_forwards_with_its_ra_key_in_the_token(
    upstream: Upstream, pin_file: Path
) -> None:
    # The RA key generated in the token by the CA's own command, a CKA_ID of its own.
    ra_uri, ra_chain = f"pkcs11:token={TOKEN};object=gw-ra", upstream.root / "gw-ra.pem"
    issued = run_cli(
        "ca",
        "issue-ra",
        upstream.paths.dir,
        "--out-cert",
        ra_chain,
        "--key-uri",
        ra_uri,
        "--pkcs11-module",
        str(MODULE),
        "--pin-file",
        pin_file,
    )
    assert issued.returncode == 0, issued.stderr
    assert re.search(
        rf"key +{re.escape(ra_uri)};id=(%[0-9A-F]{{2}}){{8}} \(in the token\)", issued.stdout
    )
    assert PIN not in issued.stdout + issued.stderr
    assert sorted(p.name for p in upstream.root.glob("gw-ra*")) == ["gw-ra.pem"]  # no key file
    device = upstream.device("hsm-gw-dev")
    args = forwarding(
        "gateway",
        upstream,
        ra_uri,
        ra_chain,
        pin_file,
        "--server-cert",
        upstream.paths.server_cert,
        "--server-key",
        upstream.paths.server_key,  # the DTLS key stays a file (pyOpenSSL)
        "--workers",
        "2",  # the PIN read once by the parent; each worker loads the key itself
    )
    with started(*args) as gateway:
        gateway.wait_for("workers serving", "the gateway's workers")
        line = gateway.wait_for("serving EST-coaps on", "the gateway")
        url = line.split(" on ", 1)[1].split(" -> ", 1)[0]
        certs = []
        for _ in range(4):  # each a new DTLS session, on whichever worker the kernel picks
            key = ec.generate_private_key(ec.SECP256R1())
            async with EstClient(
                url, trust=upstream.paths.ca_cert, cert=device.cert_path, key=device.key_path
            ) as est:
                certs.append((await est.enroll(key=key, subject=device.subject("through-ra")))[0])
        cert = certs[-1]
        argv = gateway.argv()
    for issued_cert in certs:
        check_issued(upstream, issued_cert, device)
    assert cert.public_key() == key.public_key()
    check_key_stays_in_the_token("gw-ra")
    assert ra_uri in argv and PIN not in argv
    assert PIN not in gateway.said() and "Traceback" not in gateway.said()


async def test_proxy_forwards_with_its_ra_and_server_keys_in_the_token(
    upstream: Upstream, pin_file: Path
) -> None:
    """Both of the proxy's TLS keys in the token: the RA key toward the upstream and the
    HTTPS server key the device's handshake is signed with."""
    ra_uri, ra_chain = upstream.issue_for_token_key("proxy-ra", ra=True)
    server_uri, server_chain = upstream.issue_for_token_key(
        "proxy-tls", hostnames=("127.0.0.1", "localhost")
    )
    device = upstream.device("hsm-proxy-dev")
    args = forwarding(
        "proxy",
        upstream,
        ra_uri,
        ra_chain,
        pin_file,
        "--server-cert",
        server_chain,
        "--server-key",
        server_uri,
    )
    with started(*args) as proxy:
        line = proxy.wait_for("serving EST over HTTPS on", "the proxy")
        url = line.split(" on ", 1)[1].split(" -> ", 1)[0]
        key = ec.generate_private_key(ec.SECP256R1())
        async with EstClient(
            url, trust=upstream.paths.ca_cert, cert=device.cert_path, key=device.key_path
        ) as est:
            cert = (await est.enroll(key=key, subject=device.subject("through-ra")))[0]
            served_by = (await est.transport()).peer_certificate()  # type: ignore[attr-defined]
        argv = proxy.argv()
    check_issued(upstream, cert, device)
    # The device's TLS peer was the token key's certificate.
    assert served_by == x509.load_pem_x509_certificates(server_chain.read_bytes())[0]
    for label in ("proxy-ra", "proxy-tls"):
        check_key_stays_in_the_token(label)
    assert PIN not in argv
    assert PIN not in proxy.said() and "Traceback" not in proxy.said()


def test_what_a_token_tls_key_is_refused_for_in_one_line(
    tmp_path: Path, token: Path, pin_file: Path
) -> None:
    """A wrong PIN, a missing object, a PIN in the URI, no PIN at all, a key that is not
    the certificate's, and the gateway's DTLS key: each one line, no traceback, no PIN."""
    paths = init_ca(tmp_path / "up", ["127.0.0.1"])
    up = Upstream(tmp_path, paths, DeviceMaker.create(), paths.ca_cert)
    up.url = "https://127.0.0.1:9/.well-known/est"  # nothing is reached: keys come first
    ra_uri, ra_chain = up.issue_for_token_key("refused-ra", ra=True)
    other_uri, _ = up.issue_for_token_key("other-ra", ra=True)
    wrong_pin = tmp_path / "wrong.pin"
    wrong_pin.write_text("000000\n")
    server = ["--server-cert", paths.server_cert, "--server-key", paths.server_key]
    uri_text = f"pkcs11:token={TOKEN};object=refused-ra"

    def one_line(command: str, *args: str | Path) -> str:
        done = run_cli(command, *args)
        assert done.returncode == 1, done.stdout + done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert PIN not in done.stderr + done.stdout
        return lines[0]

    for command in ("gateway", "proxy"):
        prefix = f"estcoap {command}: --ra-key: token key {uri_text}"
        said = one_line(command, *forwarding(command, up, ra_uri, ra_chain, wrong_pin)[1:], *server)
        assert said == f"{prefix}: PIN incorrect"
        missing_uri = f"pkcs11:token={TOKEN};object=no-such-key"
        said = one_line(
            command, *forwarding(command, up, missing_uri, ra_chain, pin_file)[1:], *server
        )
        assert said.endswith("object=no-such-key: object not found"), said
        said = one_line(
            command, *forwarding(command, up, other_uri, ra_chain, pin_file)[1:], *server
        )
        assert "does not belong to the certificate" in said, said
        said = one_line(
            command,
            *forwarding(command, up, f"{ra_uri}?pin-value=271828", ra_chain, pin_file)[1:],
            *server,
        )
        assert "pin-value is refused" in said and "271828" not in said, said
        no_pin = [a for a in forwarding(command, up, ra_uri, ra_chain, pin_file)[1:]]
        no_pin = no_pin[: no_pin.index("--pin-file")] + no_pin[no_pin.index("--pin-file") + 2 :]
        said = one_line(command, *no_pin, *server)
        assert "needs its user PIN" in said, said

    said = one_line(
        "gateway",
        "--coaps",
        "127.0.0.1:0",
        "--upstream",
        up.url,
        "--server-cert",
        paths.server_cert,
        "--server-key",
        f"{ra_uri}?pin-value=271828",
        "--trust-clients",
        paths.ca_cert,
    )
    assert said == (
        "estcoap gateway: --server-key: the gateway's DTLS key cannot be in a PKCS#11 token: "
        "pyOpenSSL runs its own OpenSSL, which has no PKCS#11 engine (docs/hsm.md)"
    )


def test_the_ssl_ctx_behind_a_python_context_is_the_one_openssl_reports() -> None:
    """tls_token_key reads the SSL_CTX* out of CPython's context object: for client and
    server contexts it is the OpenSSL context whose options and verify mode follow what
    Python sets, one per Python context."""
    import ssl

    from estcoap import tls_token_key

    lib = tls_token_key._openssl()
    contexts = [ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)]
    pointers = {tls_token_key._ssl_ctx_pointer(lib, ctx) for ctx in contexts}
    assert len(pointers) == 2
    server = contexts[1]
    pointer = tls_token_key._ssl_ctx_pointer(lib, server)
    for mode in (ssl.CERT_OPTIONAL, ssl.CERT_REQUIRED, ssl.CERT_NONE):
        server.verify_mode = mode
        server.options |= ssl.OP_NO_COMPRESSION
        assert tls_token_key._matches(lib, pointer, server)
    assert not tls_token_key._matches(lib, pointer, contexts[0])


async def test_serve_with_its_https_key_and_the_ca_key_in_one_token(
    tmp_path: Path, token: Path, pin_file: Path
) -> None:
    """serve --https-cert/--https-key pkcs11:...: the HTTPS front's key in the token, beside
    the CA key in the same token (python-pkcs11 and the engine share the library)."""
    paths = hsm_fixtures.token_ca(tmp_path, "serve-ca")
    maker = DeviceMaker.create()
    maker_pem = tmp_path / "maker.pem"
    maker_pem.write_bytes(maker.certificate.public_bytes(serialization.Encoding.PEM))
    web_uri, web_chain = f"pkcs11:token={TOKEN};object=serve-tls", tmp_path / "web.pem"
    token_options = ["--pkcs11-module", str(MODULE), "--pin-file", pin_file]
    issued = run_cli(
        "ca", "issue-ra", paths.dir, "--out-cert", web_chain, "--key-uri", web_uri,
        "--hostname", "127.0.0.1", "--name", "est.example", *token_options,
    )  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    cert, key = maker.issue_idevid("hsm-serve-dev")
    device = write_identity(tmp_path, "hsm-serve-dev", cert, key)
    with started(
        "serve", "--ca", paths.dir, "--https", "127.0.0.1:0", "--trust-clients", maker_pem,
        "--https-cert", web_chain, "--https-key", web_uri, *token_options,
    ) as serve:  # fmt: skip
        url = serve.wait_for("serving EST over HTTPS", "serve").split()[-1]
        async with EstClient(
            url, trust=paths.ca_cert, cert=device.cert_path, key=device.key_path
        ) as est:
            new_key = ec.generate_private_key(ec.SECP256R1())
            enrolled = (await est.enroll(key=new_key, subject=device.subject("web")))[0]
            served_by = (await est.transport()).peer_certificate()  # type: ignore[attr-defined]
        argv = serve.argv()
    assert served_by == x509.load_pem_x509_certificates(web_chain.read_bytes())[0]
    hsm_fixtures.openssl_verify(paths.ca_cert, enrolled, tmp_path)
    check_key_stays_in_the_token("serve-tls")
    assert PIN not in argv and PIN not in serve.said() and "Traceback" not in serve.said()
    # A key that is not the certificate's, in one line.
    done = run_cli(
        "serve", "--ca", paths.dir, "--https", "127.0.0.1:0", "--https-cert", paths.server_cert,
        "--https-key", web_uri, *token_options,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    mismatch = f"estcoap serve: --https-key: the token key {web_uri} does not belong to the "
    assert [line[: len(mismatch)] for line in done.stderr.splitlines()] == [mismatch]
