"""The CoAP front's shortcuts around aiocoap answer as aiocoap's own paths do.

EstSite finds an EST resource by its whole Uri-Path instead of aiocoap's walk (which
deep-copies the options per request), and EstResource skips aiocoap's Block2 cache for
answers that fit one datagram. Here one site keeps both shortcuts and another is given
aiocoap's own routing and always the Block2 cache; the same requests, good and bad,
must get the same answers from both, over real UDP on loopback.
"""

from __future__ import annotations

import socket
import types

import aiocoap
import pytest
from aiocoap.message import UndecidedRemote
from aiocoap.numbers.codes import Code
from aiocoap.optiontypes import BlockOption
from aiocoap.resource import Site

from estcoap.ca import LocalCA
from estcoap.coap.resources import EstResource
from estcoap.coap.site import build_site
from tests.integration.coaps_fixtures import make_deployment

pytestmark = pytest.mark.timeout(60)

EST = (".well-known", "est")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _without_shortcuts(site: Site) -> Site:
    site._find_child_and_pathstripped_message = types.MethodType(  # type: ignore[method-assign]
        Site._find_child_and_pathstripped_message, site
    )
    for resource in site._resources.values():
        if isinstance(resource, EstResource):

            async def through_the_cache(request, resource=resource):  # type: ignore[no-untyped-def]
                return await resource._block2.extract_or_insert(
                    request, lambda: resource.render(request)
                )

            resource._respond = through_the_cache  # type: ignore[method-assign]
    return site


def _requests() -> list[tuple[str, aiocoap.Message]]:
    def get(*path: str, **options: object) -> aiocoap.Message:
        return aiocoap.Message(code=Code.GET, uri_path=path, **options)  # type: ignore[arg-type]

    first_block = get(*EST, "crts")
    first_block.opt.block2 = BlockOption.BlockwiseTuple(0, False, 0)  # 16-byte blocks
    second_block = get(*EST, "crts")
    second_block.opt.block2 = BlockOption.BlockwiseTuple(1, False, 0)
    return [
        ("crts", get(*EST, "crts")),
        ("crts as one pkix-cert", get(*EST, "crts", accept=287)),
        ("crts in an unknown format", get(*EST, "crts", accept=60)),
        ("crts, first 16-byte block", first_block),
        ("crts, second block", second_block),
        ("csrattrs without a client certificate", get(*EST, "att")),
        ("an unknown operation", get(*EST, "nope")),
        ("a path below an operation", get(*EST, "crts", "more")),
        ("discovery", get(".well-known", "core")),
        ("the EST root", get(*EST)),
        ("POST to crts", aiocoap.Message(code=Code.POST, uri_path=(*EST, "crts"), payload=b"x")),
        (
            "sen with a CSR that is not one",
            aiocoap.Message(
                code=Code.POST, uri_path=(*EST, "sen"), payload=b"\x30\x03junk", content_format=286
            ),
        ),
        (
            "sen in the wrong format",
            aiocoap.Message(code=Code.POST, uri_path=(*EST, "sen"), payload=b"x", content_format=0),
        ),
    ]


def _answer(response: aiocoap.Message) -> tuple[object, ...]:
    return (
        response.code,
        response.payload,
        response.opt.content_format,
        response.opt.block2,
        response.opt.max_age,
        response.opt.size2,
    )


async def test_the_shortcuts_answer_as_aiocoaps_own_paths(tmp_path) -> None:  # type: ignore[no-untyped-def]
    deployment = make_deployment(tmp_path)
    ca = LocalCA.open(deployment.paths.dir, trust_clients=[deployment.maker.certificate])
    fast, ordinary = _free_udp_port(), _free_udp_port()
    servers = [
        await aiocoap.Context.create_server_context(build_site(ca), bind=("127.0.0.1", fast)),
        await aiocoap.Context.create_server_context(
            _without_shortcuts(build_site(ca)), bind=("127.0.0.1", ordinary)
        ),
    ]
    client = await aiocoap.Context.create_client_context()
    try:
        for what, request in _requests():
            answers = []
            for port in (fast, ordinary):
                message = request.copy()
                message.remote = UndecidedRemote("coap", f"127.0.0.1:{port}")
                sent = client.request(message, handle_blockwise=False)
                answers.append(_answer(await sent.response))
            assert answers[0] == answers[1], what
            assert answers[0][0] is not Code.INTERNAL_SERVER_ERROR, what
    finally:
        await client.shutdown()
        for server in servers:
            await server.shutdown()
        ca.close()
