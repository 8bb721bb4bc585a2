"""Separate processes for the gateway and proxy interop tests: `python -m estcoap.cli`
upstreams, gateways and proxies, and a PKI written to disk with the real CLI."""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from estcoap.idevid import DeviceMaker

ESTCOAP = [sys.executable, "-m", "estcoap.cli"]


def cli(*args: object, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*ESTCOAP, *map(str, args)], capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr
    return done


@dataclass
class Pki:
    """An estcoap CA with an RA certificate, and a device maker with one IDevID."""

    root: Path
    ca_dir: Path
    ra_cert: Path
    ra_key: Path
    maker_pem: Path
    device_cert: Path
    device_key: Path

    @property
    def ca_pem(self) -> Path:
        return self.ca_dir / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.ca_dir / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.ca_dir / "server.key"


def make_pki(root: Path) -> Pki:
    root.mkdir(parents=True, exist_ok=True)
    ca_dir = root / "ca"
    cli("ca", "init", ca_dir, "--hostname", "127.0.0.1", "--hostname", "localhost")
    ra_cert, ra_key = root / "ra.pem", root / "ra.key"
    cli("ca", "issue-ra", ca_dir, "--out-cert", ra_cert, "--out-key", ra_key, "--name", "test RA")
    maker = DeviceMaker.create()
    maker_pem = root / "maker.pem"
    maker_pem.write_bytes(maker.certificate.public_bytes(serialization.Encoding.PEM))
    cert, key = maker.issue_idevid("device-1")
    device_cert, device_key = root / "device.pem", root / "device.key"
    device_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    device_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Pki(root, ca_dir, ra_cert, ra_key, maker_pem, device_cert, device_key)


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str


@contextlib.contextmanager
def serving(args: list[object], ready: str, *, timeout: float = 20) -> Iterator[Server]:
    """Start `estcoap ARGS`, wait for the ready line (regex with one URL group), stop it after."""
    process = subprocess.Popen(
        [*ESTCOAP, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        url = _wait_for_line(process, re.compile(ready), timeout)
        yield Server(process, url)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if process.stdout:
            process.stdout.close()


def _wait_for_line(process: subprocess.Popen[str], pattern: re.Pattern[str], timeout: float) -> str:
    # Raw reads on the descriptor: select() cannot see lines a text wrapper buffered.
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            if process.poll() is not None:
                break
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        text += chunk.decode(errors="replace")
        match = pattern.search(text)
        if match:
            return match.group(1)
    raise AssertionError(f"no ready line /{pattern.pattern}/; output:\n{text}")


def upstream_args(pki: Pki, *extra: object) -> list[object]:
    return ["serve", "--ca", pki.ca_dir, "--https", "127.0.0.1:0", *extra]


UPSTREAM_READY = r"serving EST over HTTPS on (https://\S+)"
GATEWAY_READY = r"gateway: serving EST-coaps on (coaps://\S+) ->"
PROXY_READY = r"proxy: serving EST over HTTPS on (https://\S+) ->"


def relay_args(pki: Pki, upstream_url: str, *extra: object) -> list[object]:
    """The options `gateway` and `proxy` share: upstream, RA identity, device trust."""
    return [
        "--upstream",
        upstream_url,
        "--upstream-trust",
        pki.ca_pem,
        "--ra-cert",
        pki.ra_cert,
        "--ra-key",
        pki.ra_key,
        "--server-cert",
        pki.server_cert,
        "--server-key",
        pki.server_key,
        "--trust-clients",
        pki.maker_pem,
        *extra,
    ]


def gateway_args(pki: Pki, upstream_url: str, *extra: object) -> list[object]:
    return ["gateway", "--coaps", "127.0.0.1:0", *relay_args(pki, upstream_url, *extra)]


def proxy_args(pki: Pki, upstream_url: str, *extra: object) -> list[object]:
    return ["proxy", "--https", "127.0.0.1:0", *relay_args(pki, upstream_url, *extra)]


_RELAYS = {"gateway": (gateway_args, GATEWAY_READY), "proxy": (proxy_args, PROXY_READY)}


@contextlib.contextmanager
def relay_chain(
    relay: str, pki: Pki, *, upstream: Sequence[object] = (), front: Sequence[object] = ()
) -> Iterator[tuple[Server, Server]]:
    """`serve --https` (with the options upstream) and a `gateway` or `proxy` in front of it
    (with the options front), each a process of its own: (the upstream, the relay)."""
    relay_args_of, ready = _RELAYS[relay]
    with serving(upstream_args(pki, *upstream), UPSTREAM_READY) as up:
        with serving(relay_args_of(pki, up.url, *front), ready) as relaying:
            yield up, relaying
