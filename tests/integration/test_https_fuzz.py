"""A seeded fuzz of the HTTPS front: mutated raw HTTP/1.1 requests over TLS on loopback.

Fails on any 5xx, on a well-formed request left unanswered, on a connection the server
never lets go of, on a traceback in the log at INFO or a log that grows with the number of
requests; at the end a normal enrollment must still work.

CI runs FUZZ_REQUESTS requests (a few seconds). ESTCOAP_FUZZ_SECONDS=600 runs for that long
instead; ESTCOAP_FUZZ_SEED picks another seed. The figures are printed (pytest -s).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
import os
import random
import time

import pytest

from estcoap.client import EstClient, build_csr, generate_key
from estcoap.logsafe import FloodGuard
from tests.integration.https_fixtures import (
    PASSWORD,
    USER,
    client_ssl,
    running,
)
from tests.integration.raw_https import exchange, server_logs

FUZZ_SECONDS = float(os.environ.get("ESTCOAP_FUZZ_SECONDS", "0"))
SEED = int(os.environ.get("ESTCOAP_FUZZ_SEED", "1109"))
FUZZ_REQUESTS = 300
WORKERS = 8
# Short server limits, so that requests with a body that never comes are answered soon.
BODY_TIMEOUT = 2.0
KEEPALIVE = 2.0
# 501 (fullcmc) and 503 (try later) are answers; these are the server failing.
SERVER_FAULTS = {500, 502, 504, 505}
WAIT = 20.0
# The fuzz's wrong passwords lock its source out (https/throttle.py); the enrollment at the
# end comes from 127.0.0.1.
FUZZ_SOURCE = (
    "127.0.0.2"  # far beyond every server limit: a request still unanswered then is a defect
)

pytestmark = pytest.mark.timeout(max(120, FUZZ_SECONDS * 1.5 + 60))

OPERATIONS = [
    "cacerts",
    "csrattrs",
    "simpleenroll",
    "simplereenroll",
    "serverkeygen",
    "fullcmc",
    "nosuch",
    "",
]
# Weighted towards the methods EST uses, so that most requests reach the front's checks.
METHODS = ["POST"] * 6 + ["GET"] * 3 + ["PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT"]


class Fuzzer:
    def __init__(self, rng: random.Random, csr_b64: bytes) -> None:
        self.rng = rng
        self.csr_b64 = csr_b64

    def request(self) -> tuple[bytes, bool]:
        """Raw request bytes, and whether it is well formed (framing intact: it must get an
        answer; the answer may still be any 4xx)."""
        rng = self.rng
        method = rng.choice(METHODS if rng.random() < 0.95 else ["G\xffT", "get", "P@ST"])
        body = self.body()
        headers: list[tuple[bytes, bytes]] = [(b"Host", b"127.0.0.1")]
        for maker, odds in (
            (self.auth, 0.7),
            (self.content_type, 0.7),
            (self.expect, 0.3),
            (self.junk, 0.2),
        ):
            if rng.random() < odds:
                headers += maker()
        framing = rng.random()
        well_formed = True
        if framing < 0.7:
            headers.append((b"Content-Length", str(len(body)).encode()))
            payload = body
        elif framing < 0.85:
            headers.append((b"Transfer-Encoding", b"chunked"))
            payload = self.chunked(body)
        else:
            well_formed = False
            payload = body
            headers += rng.choice(
                [
                    [(b"Content-Length", rng.choice([b"-1", b"1x", b"99999999999999999999"]))],
                    [(b"Content-Length", b"4"), (b"Transfer-Encoding", b"chunked")],
                    [(b"Transfer-Encoding", rng.choice([b"gzip", b"chunked, gzip", b"\xff"]))],
                    [(b"Content-Length", str(len(body) + rng.randint(1, 100)).encode())],
                    [(b"Transfer-Encoding", b"chunked")],  # with a body that is not chunked
                ]
            )
        raw = (
            method.encode("utf-8", "surrogateescape")
            + b" "
            + self.path()
            + b" HTTP/1.1\r\n"
            + b"".join(name + b": " + value + b"\r\n" for name, value in headers)
            + b"\r\n"
            + payload
        )
        if rng.random() < 0.1:  # flip a few bytes anywhere
            buf = bytearray(raw)
            for _ in range(rng.randint(1, 4)):
                buf[rng.randrange(len(buf))] = rng.randrange(256)
            raw, well_formed = bytes(buf), False
        return raw, well_formed and "\xff" not in method

    def path(self) -> bytes:
        rng = self.rng
        label = rng.choice(
            [b"", b"", b"iot/", b"nosuch/", b"%ff%fe/", b"cacerts/", b"a%2Fb/", b"%00/", b"../"]
        )
        op = rng.choice(OPERATIONS).encode()
        if rng.random() < 0.1:
            op += rng.choice([b"%ff", b"%", b"%zz", b"?x=%ff", b"/extra", b";p", b"\xc3\xa9"])
        path = b"/.well-known/est/" + label + op
        if rng.random() < 0.05:
            path = rng.choice([b"/", b"*", b"//.well-known/est/cacerts", b"http://x/"]) + op
        if rng.random() < 0.03:
            path += bytes(rng.randrange(0x80, 0x100) for _ in range(3))  # not UTF-8
        return path

    def body(self) -> bytes:
        rng = self.rng
        kind = rng.random()
        if kind < 0.3:
            return self.csr_b64
        if kind < 0.45:
            return b"!!!! not base64 ****"[: rng.randint(0, 20)]
        if kind < 0.6:
            return base64.b64encode(self.random_der())
        if kind < 0.7:
            return rng.randbytes(rng.randint(0, 600))
        if kind < 0.8:
            csr = bytearray(base64.b64decode(self.csr_b64))
            csr[rng.randrange(len(csr))] ^= 1 << rng.randrange(8)
            return base64.b64encode(bytes(csr))
        return b""

    def random_der(self) -> bytes:
        rng = self.rng
        content = rng.randbytes(rng.randint(0, 60))
        if rng.random() < 0.5:
            content = b"\x02\x01\x01" + b"\x30" + bytes([len(content)]) + content
        length = len(content) if rng.random() < 0.8 else rng.randint(0, 255)
        return (
            bytes([rng.choice([0x30, 0x31, 0x02, 0x04, 0xA0, 0x06])])
            + bytes([length & 0x7F])
            + content
        )

    def auth(self) -> list[tuple[bytes, bytes]]:
        rng = self.rng
        good = base64.b64encode(f"{USER}:{PASSWORD}".encode())
        value = rng.choice(
            [
                b"Basic " + good,
                b"Basic " + good,
                b"Basic " + base64.b64encode(b"alice:wrong"),
                b"Basic !!!",
                b"Basic \xff\xfe",
                b'Digest username="\xff", realm="x", nonce="1", uri="/", response="0"',
                b"Digest " + rng.randbytes(20).replace(b"\r", b"").replace(b"\n", b""),
                b"Bearer x",
                b"",
            ]
        )
        return [(b"Authorization", value)]

    def content_type(self) -> list[tuple[bytes, bytes]]:
        value = self.rng.choice(
            [
                b"application/pkcs10",
                b"application/pkcs10",
                b"application/pkcs10; x=\xff",
                b"text/plain",
                b"\xff\xfe",
                b"",
                b"application/pkcs10, application/pkcs10",
            ]
        )
        return [(b"Content-Type", value)]

    def expect(self) -> list[tuple[bytes, bytes]]:
        value = self.rng.choice([b"100-continue", b"\xff\xfe", b"200-ok", b"", b"100-Continue"])
        return [(b"Expect", value)]

    def junk(self) -> list[tuple[bytes, bytes]]:
        rng = self.rng
        many = rng.choice([1, 1, 1, 70])  # 70: over the 64-field limit
        value = rng.randbytes(rng.choice([5, 50, 9000])).replace(b"\r", b"").replace(b"\n", b"")
        if rng.random() < 0.5:
            value = bytes(0x20 + b % 0x5F for b in value)  # printable: passes aiohttp's parser
        return [(b"X-Fuzz-%d" % i, value) for i in range(many)]

    def chunked(self, body: bytes) -> bytes:
        out = bytearray()
        while body:
            size = self.rng.randint(1, 200)
            out += b"%x\r\n" % len(body[:size]) + body[:size] + b"\r\n"
            body = body[size:]
        return bytes(out) + b"0\r\n\r\n"


async def test_https_fuzz(ca_dir) -> None:
    rng = random.Random(SEED)
    csr = base64.b64encode(build_csr(generate_key(), _name("CN=fuzz")))
    fuzzer = Fuzzer(rng, csr)
    statuses: collections.Counter[int | str] = collections.Counter()
    defects: list[str] = []
    sent = 0
    deadline = time.monotonic() + FUZZ_SECONDS

    def more() -> bool:
        return time.monotonic() < deadline if FUZZ_SECONDS else sent < FUZZ_REQUESTS

    guard = FloodGuard()  # the CLI's defaults
    with server_logs(guard, logging.INFO) as logs:
        async with running(
            ca_dir, labels=("iot",), body_timeout=BODY_TIMEOUT, keepalive_timeout=KEEPALIVE
        ) as env:
            ctx = client_ssl(env.paths)

            async def worker() -> None:
                nonlocal sent
                while more():
                    sent += 1
                    raw, well_formed = fuzzer.request()
                    answer = await exchange(
                        env.server.port, ctx, raw, wait=WAIT, source=FUZZ_SOURCE
                    )
                    statuses[answer.status if answer.status else "none"] += 1
                    if answer.status in SERVER_FAULTS:
                        defects.append(f"{answer.status} for {raw[:300]!r}: {answer.body[:200]!r}")
                    elif answer.status is None and well_formed:
                        defects.append(f"no answer to a well-formed request {raw[:300]!r}")
                    elif answer.status is None and not answer.closed:
                        defects.append(f"connection held past {WAIT} s: {raw[:300]!r}")

            await asyncio.gather(*(worker() for _ in range(WORKERS)))
            histogram = dict(sorted(statuses.items(), key=str))
            print(f"\nhttps fuzz: seed {SEED}, {sent} requests, statuses {histogram}")
            async with EstClient(
                env.url, trust=env.paths.ca_cert, user=USER, password=PASSWORD
            ) as est:
                chain = await est.enroll(key=generate_key(), subject="CN=after-the-fuzz")
    lines = logs.lines
    print(f"https fuzz: {len(lines)} log lines at INFO, {len(set(lines))} distinct:")
    for line in sorted(set(lines))[:40]:
        print("  log:", line)
    assert not defects, "\n".join(defects[:20])
    assert chain
    assert not [line for line in lines if "Traceback" in line or line.startswith(" ")]
    # Bounded: a handful of kinds, each at most burst lines per window, not one per request.
    windows = max(1.0, (FUZZ_SECONDS or 10.0) / guard.window)
    assert len(lines) <= 40 * guard.burst * windows, "\n".join(lines[:50])


def _name(text: str):  # type: ignore[no-untyped-def]
    from cryptography import x509

    return x509.Name.from_rfc4514_string(text)
