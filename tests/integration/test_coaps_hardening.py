"""Attacks on the coaps front's limits (issue 11, items 5-8 and 11), each over a real DTLS
session on loopback, each asserting the defended outcome."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from aiocoap.numbers.codes import Code

from estcoap.coap.block1 import Block1Limits
from estcoap.logsafe import FloodGuard
from tests.integration.coap_raw import (
    BLOCK1,
    BLOCK2,
    CONTENT_FORMAT,
    EST,
    GET,
    NON,
    POST,
    URI_QUERY,
    RawCoapSession,
    block,
    device_csr,
    encode,
    path,
    uint,
)
from tests.integration.coaps_fixtures import (
    Deployment,
    RunningCoaps,
    make_deployment,
    running_coaps,
)

pytestmark = pytest.mark.timeout(90)

PKCS10 = (CONTENT_FORMAT, uint(286))


@pytest.fixture(name="deployment")
def deployment_fixture(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path)


def first_block(query: str, szx: int = 0) -> list[tuple[int, bytes]]:
    """Options opening a new Block1 body on /sen, told apart from others by its query."""
    return sorted(
        [*path(*EST, "sen"), PKCS10, (URI_QUERY, query.encode()), (BLOCK1, block(0, True, szx))]
    )


async def test_block1_bodies_are_capped_per_session_and_in_total(
    deployment: Deployment,
) -> None:
    limits = Block1Limits(per_session=3, total=5, total_bytes=4 * 1024)
    async with running_coaps(deployment, block1_limits=limits) as run:
        assembler = run.server.context.serversite.assembler
        async with (
            RawCoapSession(run, deployment.device("attacker-1")) as one,
            RawCoapSession(run, deployment.device("attacker-2")) as two,
            RawCoapSession(run, deployment.device("attacker-3")) as three,
        ):
            # One session tries to open 50 bodies of 16 bytes: three are held.
            answers = [
                await one.request(POST, first_block(f"n={i}"), b"\x30" * 16) for i in range(50)
            ]
            assert [a.code for a in answers[:3]] == [Code.CONTINUE] * 3
            refused = answers[3:]
            assert {a.code for a in refused} == {Code.SERVICE_UNAVAILABLE}
            assert all(a.opt.max_age is not None and 1 <= a.opt.max_age <= 93 for a in refused)
            assert b"this session" in refused[0].payload
            assert assembler.open_assemblies == 3 and assembler.held_bytes == 48

            # A second session fills the server-wide count; a third is refused.
            for i in range(2):
                answer = await two.request(POST, first_block(f"n={i}"), b"\x30" * 16)
                assert answer.code == Code.CONTINUE
            over = await three.request(POST, first_block("n=0"), b"\x30" * 16)
            assert over.code == Code.SERVICE_UNAVAILABLE and over.opt.max_age is not None
            assert b"the server holds" in over.payload
            assert assembler.open_assemblies == limits.total

        # Another device still enrolls (its CSR fits one datagram): the caps hold the
        # attacker's bodies, not the service.
        async with RawCoapSession(run, deployment.device("honest")) as honest:
            ok = await honest.request(
                POST, ([*path(*EST, "sen"), PKCS10]), device_csr(deployment.device("honest"))
            )
        assert ok.code == Code.CHANGED, ok.payload


async def test_one_body_past_the_byte_cap_gets_503_and_is_dropped(deployment: Deployment) -> None:
    limits = Block1Limits(per_session=4, total=10, total_bytes=3 * 1024)
    async with running_coaps(deployment, block1_limits=limits) as run:
        assembler = run.server.context.serversite.assembler
        async with RawCoapSession(run, deployment.device("bytes")) as session:
            answers = []
            for i in range(4):
                opts = [*path(*EST, "sen"), PKCS10, (BLOCK1, block(i, True, 6))]
                answers.append(await session.request(POST, opts, b"\x30" * 1024))
        assert [a.code for a in answers[:3]] == [Code.CONTINUE] * 3
        assert answers[3].code == Code.SERVICE_UNAVAILABLE and answers[3].opt.max_age
        assert assembler.held_bytes == 0 and assembler.open_assemblies == 0


BODILESS = {
    "/.well-known/core": ((".well-known", "core"), Code.REQUEST_ENTITY_TOO_LARGE),
    "EST root": (EST, Code.REQUEST_ENTITY_TOO_LARGE),
    "crts": ((*EST, "crts"), Code.REQUEST_ENTITY_TOO_LARGE),
    "att": ((*EST, "att"), Code.REQUEST_ENTITY_TOO_LARGE),
    "unknown path": ((*EST, "nope"), Code.NOT_FOUND),
}


@pytest.mark.parametrize("name", list(BODILESS))
async def test_a_body_for_a_resource_that_takes_none_is_refused_at_the_first_block(
    deployment: Deployment, name: str
) -> None:
    segments, expected = BODILESS[name]
    async with running_coaps(deployment) as run:
        assembler = run.server.context.serversite.assembler
        async with RawCoapSession(run, deployment.device("bodiless")) as session:
            answers = []
            for method in (GET, POST):
                for number in (0, 1, 5, 30000):  # a first block, then blocks out of order
                    opts = [*path(*segments), (BLOCK1, block(number, True, 0))]
                    answers.append(await session.request(method, opts, b"x" * 16))
                answers.append(await session.request(method, path(*segments), b"a payload"))
            normal = await session.request(GET, path(".well-known", "core"))
        assert {a.code for a in answers} == {expected}, [(a.code, a.payload) for a in answers]
        if expected == Code.REQUEST_ENTITY_TOO_LARGE:
            assert all(a.opt.size1 == 0 and a.payload for a in answers)
        assert assembler.open_assemblies == 0
        assert normal.code == Code.CONTENT


async def issued_count(run: RunningCoaps) -> int:
    return len(run.ca.store.issued_list())


@pytest.mark.parametrize("option", [9, 1, 5, 21, 65001])
async def test_an_unrecognized_critical_option_gets_4_02_and_issues_nothing(
    deployment: Deployment, option: int
) -> None:
    device = deployment.device(f"critical-{option}")
    async with running_coaps(deployment) as run:
        async with RawCoapSession(run, device) as session:
            before = await issued_count(run)
            opts = [*path(*EST, "sen"), PKCS10, (option, b"\x01")]
            refused = await session.request(POST, opts, device_csr(device))
            assert refused.code == Code.BAD_OPTION, refused.payload
            assert str(option).encode() in refused.payload
            assert await issued_count(run) == before
            # An unknown elective option (even number) is ignored, as RFC 7252 s5.4.1 says.
            opts = [*path(*EST, "sen"), PKCS10, (65000, b"\x01")]
            served = await session.request(POST, opts, device_csr(device))
        assert served.code == Code.CHANGED, served.payload
        assert await issued_count(run) == before + 1


async def test_a_repeated_critical_option_and_a_proxy_request_are_refused(
    deployment: Deployment,
) -> None:
    device = deployment.device("repeat")
    async with running_coaps(deployment) as run:
        async with RawCoapSession(run, device) as session:
            accept_twice = [*path(*EST, "crts"), (17, uint(281)), (17, uint(287))]
            repeated = await session.request(GET, accept_twice)
            proxied = await session.request(GET, [(35, b"coap://example.com/x")])
    assert repeated.code == Code.BAD_OPTION
    assert proxied.code == Code.PROXYING_NOT_SUPPORTED


@pytest.mark.parametrize(
    "options",
    [
        path(".well-known", b"est\xff"),
        path(*EST, b"\xc3\x28"),
        ([*path(*EST, "crts"), (URI_QUERY, b"a=\xfe")]),
    ],
    ids=["uri-path", "uri-path-bad-sequence", "uri-query"],
)
async def test_non_utf8_uri_options_get_an_answer(deployment: Deployment, options) -> None:
    async with running_coaps(deployment) as run:
        async with RawCoapSession(run, deployment.device("utf8")) as session:
            confirmable = await session.request(GET, options)
            non = await session.exchange(
                encode(GET, mtype=NON, mid=session.mid(), token=b"nn", options=options)
            )
            after = await session.request(GET, path(*EST, "crts"))
    assert confirmable.code == Code.BAD_OPTION and b"UTF-8" in confirmable.payload
    assert non is not None and non.code == Code.BAD_OPTION and non.token == b"nn"
    assert after.code == Code.CONTENT  # the session survives


def bad_datagrams(session: RawCoapSession) -> list[bytes]:
    """Inside the DTLS session: undecodable CoAP of every kind the decoder refuses."""
    return [
        encode(GET, mid=session.mid(), token=b"t", options=path(b"\xff\xfe")),
        encode(GET, mid=session.mid(), token=b"t", options=path(*EST))[:-3],  # truncated
        b"\x00\x01",  # shorter than a CoAP header
        b"\x80\x01\x00\x01",  # version 2
        encode(GET, mid=session.mid(), token=b"t", token_length=9),
        encode(POST, mid=session.mid(), options=[(0xFFFF, b"x")])[:6],
    ]


async def test_a_malformed_datagram_burst_writes_few_lines_and_no_traceback(
    deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    # What `serve` puts on its log handler (estcoap.logsafe), beside pytest's capture.
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(FloodGuard())
    root = logging.getLogger()
    root.addHandler(handler)
    caplog.set_level(logging.INFO)
    try:
        async with running_coaps(deployment) as run:
            async with RawCoapSession(run, deployment.device("flood")) as session:
                sent = 0
                for _ in range(40):
                    for datagram in bad_datagrams(session):
                        session.send(datagram)
                        sent += 1
                    session.raw.send_raw(b"\x17\xfe\xfd" + b"\x00" * 10)  # a bogus record
                    sent += 1
                after = await session.request(GET, path(*EST, "crts"), timeout=15)
    finally:
        root.removeHandler(handler)
    assert after.code == Code.CONTENT
    records = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(records) <= sent  # at most one line per event
    assert not [r for r in records if r.exc_info or r.stack_info], "a traceback at INFO or above"
    lines = stream.getvalue().splitlines()
    assert len(lines) <= 30, "\n".join(lines[:40])  # repeats collapsed
    assert "Traceback" not in stream.getvalue()


async def test_block2_responses_held_for_a_session_are_bounded(deployment: Deployment) -> None:
    async with running_coaps(deployment) as run:
        responses = run.server.context.serversite.responses
        async with RawCoapSession(run, deployment.device("block2")) as session:
            # Block 0 of /crts, 50 times, each made distinct by an elective option.
            for i in range(50):
                opts = [*path(*EST, "crts"), (BLOCK2, block(0, False, 0)), (2048, uint(i))]
                first = await session.request(GET, opts)
                assert first.code == Code.CONTENT and first.opt.block2.more
            held = responses.held
            # A whole Block2 download still works: the blocks come from the cached copy.
            body, number = b"", 0
            while True:
                opts = [*path(*EST, "crts"), (BLOCK2, block(number, False, 0))]
                part = await session.request(GET, opts)
                assert part.code == Code.CONTENT
                body += part.payload
                if not part.opt.block2.more:
                    break
                number += 1
        assert held <= 4
        assert body == (await run.ca.cacerts(None)).pkcs7_der
