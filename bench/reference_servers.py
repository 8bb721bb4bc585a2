"""C servers on the same certificates, for bench/server_cost.py to put beside its figures.

The crypto floor is what the cryptography alone costs; a real server also parses and
builds handshake messages, hashes transcripts, checks the client's chain, copies records
through BIOs and the kernel. These servers show what that costs when none of it is
Python: libcoap's coap-server-openssl answering a GET over a new DTLS 1.2 session, and
`openssl s_server -WWW` answering a GET over a new TLS 1.3 connection, both asking for
and verifying the client's certificate. They link the system's OpenSSL (Debian's 3.0),
where estcoap's DTLS goes through the one bundled with `cryptography` and its HTTPS
through the system's: the comparison is of servers, not of one library.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

PAGE = "hello.txt"  # what s_server -WWW serves: a few bytes, like a small EST answer


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until(check, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not answer within {timeout:.0f} s")
        time.sleep(0.2)


def start_libcoap(cert: Path, key: Path, client_roots: Path) -> tuple[subprocess.Popen, str]:
    """coap-server-openssl on a free port; returns it and the coaps:// URI of its root."""
    port = _free_port(socket.SOCK_DGRAM)
    # -p is the plain CoAP port; the server listens for DTLS on the next one.
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
                break
            except OSError:
                port = _free_port(socket.SOCK_DGRAM)
    server = subprocess.Popen(
        ["coap-server-openssl", "-A", "127.0.0.1", "-p", str(port), "-v", "0"]
        + ["-c", str(cert), "-j", str(key), "-R", str(client_roots)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return server, f"coaps://127.0.0.1:{port + 1}/"


def start_s_server(
    work: Path, cert: Path, key: Path, client_roots: Path
) -> tuple[subprocess.Popen, str]:
    """openssl s_server -WWW (client certificate required) serving one small file."""
    (work / PAGE).write_text("hello from s_server\n")
    port = _free_port(socket.SOCK_STREAM)
    server = subprocess.Popen(
        ["openssl", "s_server", "-quiet", "-WWW", "-accept", f"127.0.0.1:{port}"]
        + ["-cert", str(cert), "-key", str(key), "-Verify", "2", "-CAfile", str(client_roots)],
        cwd=work,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    _wait_until(listening, "openssl s_server")
    return server, f"https://127.0.0.1:{port}/{PAGE}"


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
