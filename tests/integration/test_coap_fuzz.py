"""A seeded fuzz of the coaps front over a real DTLS session on loopback (issue 11).

Mutated requests go to every resource: random methods, known options with random values,
unknown critical and elective options, repeated and over-long options, Block1/Block2
mixes and broken Block1 sequences, non-UTF-8 Uri-Path and Uri-Query, random or mangled
payloads, truncated and bit-flipped messages. The run fails on any 5.00, on any
well-formed confirmable request left unanswered, and on any log record carrying a
traceback; at the end the server must still enroll a device normally.

Bounded for CI (ESTCOAP_FUZZ_REQUESTS, 400 by default); ESTCOAP_FUZZ_SECONDS=600 runs
for that long instead, ESTCOAP_FUZZ_SEED picks another seed. The summary (requests,
response codes) is printed; run with -s to see it.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import time
from pathlib import Path

import aiocoap
import pytest
from aiocoap import error as coap_error
from aiocoap.numbers.codes import Code
from cryptography import x509
from cryptography.x509.oid import NameOID

from estcoap.coap.options import PROCESSED
from tests.integration.coap_raw import (
    ACCEPT,
    BLOCK1,
    BLOCK2,
    CON,
    CONTENT_FORMAT,
    EST,
    NON,
    SIZE1,
    URI_PATH,
    URI_QUERY,
    RawCoapSession,
    block,
    device_csr,
    encode,
    uint,
)
from tests.integration.coaps_fixtures import Deployment, make_deployment, running_coaps

SEED = int(os.environ.get("ESTCOAP_FUZZ_SEED", "20261202"))
REQUESTS = int(os.environ.get("ESTCOAP_FUZZ_REQUESTS", "400"))
SECONDS = float(os.environ.get("ESTCOAP_FUZZ_SECONDS", "0"))
LABEL = "fleet"
MAX_DATAGRAM = 1100  # below the DTLS record limit of the raw client (1232)

pytestmark = pytest.mark.timeout(max(300, SECONDS * 2 + 120))

PATHS = [
    (".well-known", "core"),
    EST,
    *[(*EST, op) for op in ("crts", "att", "sen", "sren", "skg", "skc")],
    *[(*EST, LABEL, op) for op in ("crts", "sen", "skg")],
    (*EST, "nolabel", "crts"),
    ("est",),
    (),
]
ELECTIVE_POOL = [4, 6, 8, 12, 14, 20, 28, 60, 252, 292, 1000, 2048, 65000]  # not 258: see below
CRITICAL_UNKNOWN = [1, 5, 9, 13, 19, 21, 31, 57, 259, 1001, 2049, 65001]


class Fuzzer:
    """Builds one mutated message at a time from a seeded Random."""

    def __init__(self, rng: random.Random, csrs: list[bytes]) -> None:
        self.rng = rng
        self.csrs = csrs

    def payload(self) -> bytes:
        rng = self.rng
        kind = rng.randrange(5)
        if kind == 0:
            return b""
        if kind == 1:
            return rng.choice(self.csrs)
        if kind == 2:  # a CSR with bytes flipped
            mangled = bytearray(rng.choice(self.csrs))
            for _ in range(rng.randint(1, 8)):
                mangled[rng.randrange(len(mangled))] = rng.randrange(256)
            return bytes(mangled)
        if kind == 3:
            csr = rng.choice(self.csrs)
            return csr[: rng.randrange(len(csr))]
        return rng.randbytes(rng.randint(1, 600))

    def option(self) -> list[tuple[int, bytes]]:
        rng = self.rng
        pick = rng.randrange(12)
        if pick == 0:
            return [(rng.choice(CRITICAL_UNKNOWN), rng.randbytes(rng.randint(0, 4)))]
        if pick == 1:
            # No-Response (258) is left out: with it a server rightly sends no response.
            return [(rng.choice(ELECTIVE_POOL), rng.randbytes(rng.randint(0, 8)))]
        if pick == 2:
            return [
                (
                    ACCEPT,
                    uint(
                        rng.choice(
                            [0, 40, 60, 62, 280, 281, 284, 285, 286, 287, rng.randrange(70000)]
                        )
                    ),
                )
            ]
        if pick == 3:
            return [(CONTENT_FORMAT, uint(rng.choice([0, 286, 281, rng.randrange(70000)])))]
        if pick == 4:
            return [(BLOCK1, block(rng.randrange(40), rng.random() < 0.5, rng.randrange(8)))]
        if pick == 5:
            return [(BLOCK2, block(rng.randrange(40), rng.random() < 0.5, rng.randrange(8)))]
        if pick == 6:
            return [(SIZE1, uint(rng.randrange(1 << 20)))]
        if pick == 7:  # a query, sometimes not UTF-8
            return [(URI_QUERY, rng.choice([b"a=1", rng.randbytes(rng.randint(0, 12))]))]
        if pick == 8:  # a processed critical option repeated or over-long
            number = rng.choice(list(PROCESSED))
            if rng.random() < 0.5:
                return [(number, uint(rng.randrange(256)))] * 2
            return [(number, rng.randbytes(rng.choice([3, 4, 256, 300])))]
        if pick == 9:
            return [(3, rng.choice([b"localhost", rng.randbytes(rng.randint(1, 20))]))]
        if pick == 10:
            return [(rng.choice([35, 39]), b"coap://127.0.0.1/x")]
        return [(7, uint(rng.randrange(1 << 20)))]  # Uri-Port, sometimes over 2 bytes

    def request(self, mid: int, token: bytes) -> bytes:
        rng = self.rng
        segments: list[bytes] = [s.encode() for s in rng.choice(PATHS)]
        if rng.random() < 0.1:  # a segment that is not UTF-8
            segments.insert(
                rng.randint(0, len(segments)), rng.choice([b"\xff", b"\xc3\x28", b"a\xfe"])
            )
        options = [(URI_PATH, s) for s in segments]
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            options += self.option()
        code = rng.choice([1, 1, 2, 2, 2, 3, 4, 5, rng.randint(0, 31)])
        mtype = CON if rng.random() < 0.9 else NON
        payload = b"" if code == 1 and rng.random() < 0.7 else self.payload()  # GETs: few
        message = encode(code, mtype=mtype, mid=mid, token=token, options=options, payload=payload)
        return self.mangle(message)[:MAX_DATAGRAM]

    def mangle(self, message: bytes) -> bytes:
        rng = self.rng
        roll = rng.random()
        if roll < 0.08:  # truncated
            return message[: rng.randrange(1, len(message))]
        if roll < 0.16:  # bytes flipped (the header stays, so the answer can be matched)
            flipped = bytearray(message)
            for _ in range(rng.randint(1, 4)):
                if len(flipped) > 6:
                    flipped[rng.randrange(6, len(flipped))] = rng.randrange(256)
            return bytes(flipped)
        return message

    def block1_sequence(self, token: bytes) -> list[tuple[list[tuple[int, bytes]], bytes]]:
        """A Block1 upload of a CSR to an enrollment resource, broken at random."""
        rng = self.rng
        body = rng.choice(self.csrs) + rng.randbytes(rng.choice([0, 0, 64, 5000]))
        szx = rng.randrange(3)
        size = 16 << szx
        chunks = [body[i : i + size] for i in range(0, len(body), size)]
        target = [(URI_PATH, s.encode()) for s in (*EST, rng.choice(["sen", "skg", "crts"]))]
        steps = []
        for number, chunk in enumerate(chunks[:12]):
            more = number < len(chunks) - 1
            if rng.random() < 0.08:
                number += rng.choice([1, -1, 5])  # a gap, a repeat, a jump
            if rng.random() < 0.05:
                chunk = chunk[:-1]  # a short block
            options = target + [
                (CONTENT_FORMAT, uint(286)),
                (BLOCK1, block(max(0, number), more, szx)),
            ]
            steps.append((options, chunk))
        return steps


def well_formed_request(message: bytes) -> bool:
    """Whether an answer is owed: a CON request aiocoap decodes, or one that fails only on
    a string option that is not UTF-8 (the server answers that with 4.02)."""
    if len(message) < 4 or message[0] >> 6 != 1 or (message[0] >> 4) & 3 != CON:
        return False
    if message[0] & 0x0F > 8 or not Code(message[1]).is_request():
        return False
    try:
        aiocoap.Message.decode(message)
    except UnicodeDecodeError:
        return True
    except coap_error.UnparsableMessage:
        return False
    return True


@pytest.fixture(name="deployment")
def deployment_fixture(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path)


async def test_fuzzed_requests_get_no_5_00_and_always_an_answer(
    deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    rng = random.Random(SEED)
    device = deployment.device("fuzz-0001")
    csrs = [device_csr(device) for _ in range(3)]
    fuzzer = Fuzzer(rng, csrs)
    codes: collections.Counter[str] = collections.Counter()
    sent = unanswered_malformed = 0
    started = time.monotonic()

    def more() -> bool:
        if SECONDS:
            return time.monotonic() - started < SECONDS
        return sent < REQUESTS

    async with running_coaps(deployment, labels=(LABEL,), max_body=4096) as run:
        async with RawCoapSession(run, device) as session:
            while more():
                token = rng.randbytes(rng.randint(0, 8))
                if rng.random() < 0.1:
                    messages = [
                        encode(2, mid=session.mid(), token=token, options=o, payload=p)
                        for o, p in fuzzer.block1_sequence(token)
                    ]
                else:
                    messages = [fuzzer.request(session.mid(), token)]
                for message in messages:
                    sent += 1
                    owed = well_formed_request(message)
                    answer = await session.exchange(message, timeout=12 if owed else 0.05)
                    if answer is None:
                        assert not owed, f"seed {SEED}: no answer to {message!r}"
                        unanswered_malformed += 1
                        continue
                    codes[f"{answer.mtype.name} {answer.code}"] += 1
                    assert answer.code != Code.INTERNAL_SERVER_ERROR, (
                        f"seed {SEED}: 5.00 for {message!r}: {answer.payload!r}"
                    )
            fuzz_seconds = time.monotonic() - started
            open_bodies = run.server.context.serversite.assembler.open_assemblies

        # The server still serves a normal enrollment, over a new session.
        fresh = deployment.device("after-fuzz")
        serial = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, "after-fuzz")])
        async with run.client(fresh) as est:
            provisioned = await est.provision(serial)
        assert provisioned.certificate.subject == serial

    tracebacks = [r for r in caplog.records if r.exc_info]
    assert not tracebacks, [r.getMessage() for r in tracebacks[:5]]
    warnings = collections.Counter(
        r.getMessage()[:60] for r in caplog.records if r.levelno >= logging.WARNING
    )
    print(
        f"\ncoap fuzz: seed {SEED}, {sent} messages in {fuzz_seconds:.0f} s, "
        f"{unanswered_malformed} malformed left unanswered, {open_bodies} Block1 bodies open "
        f"at the end\nanswers: {dict(sorted(codes.items()))}\nwarnings: {dict(warnings)}"
    )
