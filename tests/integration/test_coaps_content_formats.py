"""Which certificate format our EST-coaps client asks for (RFC 9148 s4.3).

Every server has 281 (certs-only); 287 (the issued certificate alone) is optional. The
client asks for 281 unless told to want 287, and a server that refuses 287 (4.06) is
asked for 281 from then on, so the device pays the second request once, not per call.
The server here is our own over real DTLS, its sen resource made to know only 281."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code
from cryptography import x509
from cryptography.x509.oid import NameOID

from estcoap.client import generate_key
from tests.integration.coaps_fixtures import (
    Deployment,
    RunningCoaps,
    make_deployment,
    running_coaps,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(name="deployment")
def deployment_fixture(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path)


def subject(serial: str) -> x509.Name:
    """What an IDevID-authenticated device may ask for: its IDevID's serialNumber."""
    return x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, serial)])


def record_accepts(env: RunningCoaps, *, only_281: bool) -> list[int | None]:
    """The Accept of each sen request, in a list; only_281 makes sen refuse any other."""
    resource = env.server.context.serversite._resources[(".well-known", "est", "sen")]
    render = resource.render_to_pipe
    accepts: list[int | None] = []

    async def recording(pipe):  # type: ignore[no-untyped-def]
        accept = pipe.request.opt.accept
        accepts.append(None if accept is None else int(accept))
        if only_281 and accept is not None and int(accept) != 281:
            pipe.add_response(Message(code=Code.NOT_ACCEPTABLE, payload=b"281 only"), is_last=True)
            return
        await render(pipe)

    resource.render_to_pipe = recording
    return accepts


async def test_client_asks_for_281_by_default(deployment: Deployment) -> None:
    device = deployment.device("dev281")
    async with running_coaps(deployment) as env:
        accepts = record_accepts(env, only_281=True)
        key = generate_key()
        async with env.client(device) as est:
            chain = await est.enroll(key=key, subject=subject("dev281"))
    assert accepts == [281]  # one request, no refused 287 first
    assert chain[0].public_key() == key.public_key()


async def test_287_when_asked_and_281_remembered_after_a_refusal(deployment: Deployment) -> None:
    device = deployment.device("dev287")
    async with running_coaps(deployment) as env:
        accepts = record_accepts(env, only_281=True)
        async with env.client(device, single_certificate=True) as est:
            key = generate_key()
            first = await est.enroll(key=key, subject=subject("dev287"))
            await est.enroll(key=generate_key(), subject=subject("dev287"))
    assert accepts == [287, 281, 281]  # refused once, then 281 straight away
    assert first[0].public_key() == key.public_key()


async def test_287_from_a_server_that_has_it(deployment: Deployment) -> None:
    device = deployment.device("dev287b")
    async with running_coaps(deployment) as env:
        accepts = record_accepts(env, only_281=False)
        async with env.client(device, single_certificate=True) as est:
            key = generate_key()
            chain = await est.enroll(key=key, subject=subject("dev287b"))
    assert accepts == [287]
    assert chain[0].public_key() == key.public_key()
