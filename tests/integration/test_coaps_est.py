"""EST-coaps (RFC 9148) end to end: our client and raw CoAP requests against the coap front
over certificate DTLS on loopback, with the real LocalCA behind it."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import aiocoap
import cbor2
import pytest
from aiocoap.numbers.codes import Code
from aiocoap.optiontypes import BlockOption
from aiocoap.util.linkformat import parse as parse_links
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from estcoap.ca import Store
from estcoap.client import EstClient, EstClientError
from estcoap.codec import pkcs7
from estcoap.codec.names import format_name
from estcoap.codec.pkcs10 import build_csr
from estcoap.dtls import DtlsClientConfig, create_client_context
from tests.integration.coaps_fixtures import (
    Deployment,
    Device,
    RunningCoaps,
    make_deployment,
    running_coaps,
    write_identity,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(name="deployment")
def deployment_fixture(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path)


async def raw_context(run: RunningCoaps, device: Device) -> aiocoap.Context:
    config = DtlsClientConfig(
        trust_anchors=[run.ca.ca_certificate],
        certificate_chain=[device.certificate],
        private_key=device.key,  # type: ignore[arg-type]
    )
    return await create_client_context(config)


def csr_for(device: Device, cn: str = "dev", challenge: bytes | None = None) -> bytes:
    """A CSR for the device's own identity (its serialNumber) with this CN."""
    key = ec.generate_private_key(ec.SECP256R1())
    return build_csr(key, device.subject(cn), challenge_password=challenge)


async def test_discovery_lists_rfc9148_resources(deployment: Deployment) -> None:
    async with running_coaps(deployment) as run:
        ctx = await raw_context(run, deployment.device("disc"))
        try:
            req = aiocoap.Message(code=Code.GET, uri=f"{run.origin}/.well-known/core?rt=ace.est*")
            res = await ctx.request(req).response
        finally:
            await ctx.shutdown()
    assert res.code == Code.CONTENT
    links = {link.href: link for link in parse_links(res.payload.decode()).links}
    want = {
        "/.well-known/est": ("ace.est", None),
        "/.well-known/est/crts": ("ace.est.crts", "281 287"),
        "/.well-known/est/sen": ("ace.est.sen", "281 287"),
        "/.well-known/est/sren": ("ace.est.sren", "281 287"),
        "/.well-known/est/skg": ("ace.est.skg", "62"),
        "/.well-known/est/skc": ("ace.est.skc", "62"),
        "/.well-known/est/att": ("ace.est.att", "285"),
    }
    assert set(links) == set(want)
    for href, (rt, ct) in want.items():
        assert links[href].rt == [rt]
        if ct is not None:
            assert " ".join(links[href].ct) == ct


async def test_short_root_is_served_and_advertised(deployment: Deployment) -> None:
    device = deployment.device("short")
    async with running_coaps(deployment, short_root="/est") as run:
        ctx = await raw_context(run, device)
        try:
            req = aiocoap.Message(code=Code.GET, uri=f"{run.origin}/.well-known/core?rt=ace.est*")
            res = await ctx.request(req).response
            crts = await ctx.request(
                aiocoap.Message(code=Code.GET, uri=f"{run.origin}/est/crts")
            ).response
        finally:
            await ctx.shutdown()
        hrefs = {link.href for link in parse_links(res.payload.decode()).links}
        assert "/est/crts" in hrefs and "/.well-known/est/crts" not in hrefs
        assert crts.code == Code.CONTENT


async def test_client_discovers_a_server_rooted_at_est_only(deployment: Deployment) -> None:
    """Like libEST: EST at /est only. A URL without a path finds it through discovery."""
    device = deployment.device("libest-like")
    async with running_coaps(deployment, short_root="/est", well_known=False) as run:
        assert run.url.endswith(":" + str(run.server.port) + "/est")
        async with run.client(device, url=run.origin) as est:
            assert (await est.cacerts())[0] == run.ca.ca_certificate
            key = ec.generate_private_key(ec.SECP256R1())
            chain = await est.enroll(key=key, subject=device.subject("d"))
            assert chain[0].subject == device.subject("d")
        async with run.client(device, url=run.origin + "/.well-known/est") as est:
            with pytest.raises(EstClientError) as missing:
                await est.cacerts()
            assert missing.value.status == "4.04"


async def test_coaps_client_without_certificate_is_told_why(deployment: Deployment) -> None:
    async with running_coaps(deployment) as run:
        async with EstClient(run.url, trust=deployment.paths.ca_cert) as est:
            with pytest.raises(EstClientError, match="needs a client certificate"):
                await est.cacerts()


async def test_provision_reenroll_and_serverkeygen(deployment: Deployment) -> None:
    device = deployment.device("dev-0001")
    async with running_coaps(deployment) as run:
        async with run.client(device) as est:
            result = await est.provision("CN=dev-0001,serialNumber=dev-0001,O=Example")
        expected = "CN=dev-0001,serialNumber=dev-0001,O=Example"
        assert format_name(result.certificate.subject) == expected
        result.certificate.verify_directly_issued_by(run.ca.ca_certificate)
        key_der = result.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        assert key_der == result.certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        # sren over a DTLS session authenticated with the certificate just issued.
        operational = write_identity(deployment.root, "op", result.certificate, result.private_key)
        async with run.client(operational) as est:
            renewed = await est.reenroll()
            assert renewed[0].subject == result.certificate.subject
            assert renewed[0].serial_number != result.certificate.serial_number
            new_key, certs = await est.serverkeygen(subject=result.certificate.subject)
        assert certs[0].public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) == new_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )


async def test_the_front_notes_the_chain_dtls_verified_in_the_services_trust(
    deployment: Deployment,
) -> None:
    device = deployment.device("dev-noted")
    pair = (device.certificate, deployment.maker.certificate)
    async with running_coaps(deployment) as run:
        assert pair not in run.ca.client_trust.signatures
        async with run.client(device) as est:
            await est.cacerts()  # an operation that makes LocalCA check nothing
        # The handshake verified the IDevID against its maker: LocalCA's own check of the
        # chain, on enrollment, finds that verdict instead of verifying the signature again.
        assert pair in run.ca.client_trust.signatures
        assert run.ca.client_trust.trusted(pair)


async def test_formats_281_287_and_skg_skc(deployment: Deployment) -> None:
    device = deployment.device("formats")
    async with running_coaps(deployment) as run:
        ctx = await raw_context(run, device)
        base = f"{run.origin}/.well-known/est"
        try:
            crts281 = await ctx.request(aiocoap.Message(code=Code.GET, uri=f"{base}/crts")).response
            crts287 = await ctx.request(
                aiocoap.Message(code=Code.GET, uri=f"{base}/crts", accept=287)
            ).response
            sen = await ctx.request(
                aiocoap.Message(
                    code=Code.POST,
                    uri=f"{base}/sen",
                    payload=csr_for(device, "f1"),
                    content_format=286,
                    accept=287,
                )
            ).response
            skg = await ctx.request(
                aiocoap.Message(
                    code=Code.POST,
                    uri=f"{base}/skg",
                    payload=csr_for(device, "f2"),
                    content_format=286,
                )
            ).response
            skc = await ctx.request(
                aiocoap.Message(
                    code=Code.POST,
                    uri=f"{base}/skc",
                    payload=csr_for(device, "f3"),
                    content_format=286,
                )
            ).response
        finally:
            await ctx.shutdown()
    assert (crts281.code, crts281.opt.content_format) == (Code.CONTENT, 281)
    assert pkcs7.decode_certs_only(crts281.payload) == [run.ca.ca_certificate]
    assert (crts287.code, crts287.opt.content_format) == (Code.CONTENT, 287)
    assert x509.load_der_x509_certificate(crts287.payload) == run.ca.ca_certificate
    assert (sen.code, sen.opt.content_format) == (Code.CHANGED, 287)
    assert x509.load_der_x509_certificate(sen.payload).subject == device.subject("f1")
    for response, cert_cf in ((skg, 281), (skc, 287)):
        assert (response.code, response.opt.content_format) == (Code.CHANGED, 62)
        parts = cbor2.loads(response.payload)
        assert parts[0] == 284 and parts[2] == cert_cf and len(parts) == 4
        key = serialization.load_der_private_key(parts[1], None)
        if cert_cf == 287:
            certs = [x509.load_der_x509_certificate(parts[3])]
        else:  # certs-only: a SET, so find the issued one among the chain
            certs = pkcs7.decode_certs_only(parts[3])
        assert any(cert.public_key() == key.public_key() for cert in certs)


async def test_error_codes(deployment: Deployment) -> None:
    device = deployment.device("errors")
    async with running_coaps(deployment, labels=("fleet",), max_body=4096) as run:
        ctx = await raw_context(run, device)
        base = f"{run.origin}/.well-known/est"

        async def send(**kwargs: object) -> aiocoap.Message:
            return await ctx.request(aiocoap.Message(**kwargs)).response  # type: ignore[arg-type]

        try:
            good = csr_for(device)
            cases = {
                "bad CSR": (
                    await send(
                        code=Code.POST,
                        uri=f"{base}/sen",
                        payload=b"\x30\x03abc",
                        content_format=286,
                    ),
                    Code.BAD_REQUEST,
                ),
                "wrong CF": (
                    await send(code=Code.POST, uri=f"{base}/sen", payload=good, content_format=0),
                    Code.UNSUPPORTED_CONTENT_FORMAT,
                ),
                "no CF": (
                    await send(code=Code.POST, uri=f"{base}/sen", payload=good),
                    Code.UNSUPPORTED_CONTENT_FORMAT,
                ),
                "bad Accept": (
                    await send(code=Code.GET, uri=f"{base}/crts", accept=62),
                    Code.NOT_ACCEPTABLE,
                ),
                "method": (
                    await send(code=Code.PUT, uri=f"{base}/sen", payload=good, content_format=286),
                    Code.METHOD_NOT_ALLOWED,
                ),
                "unknown label": (
                    await send(code=Code.GET, uri=f"{base}/nolabel/crts"),
                    Code.NOT_FOUND,
                ),
                "known label": (await send(code=Code.GET, uri=f"{base}/fleet/crts"), Code.CONTENT),
                "sren with an IDevID": (
                    await send(
                        code=Code.POST, uri=f"{base}/sren", payload=good, content_format=286
                    ),
                    Code.FORBIDDEN,
                ),
                "PoP mismatch": (
                    await send(
                        code=Code.POST,
                        uri=f"{base}/sen",
                        payload=csr_for(device, challenge=base64.b64encode(b"\x00" * 12)),
                        content_format=286,
                    ),
                    Code.UNAUTHORIZED,
                ),
            }
            # Block1 over the cap: 4.13 with Size1 (aiocoap sends the blocks for us).
            too_big = await send(
                code=Code.POST, uri=f"{base}/sen", payload=b"\x30" * 8192, content_format=286
            )
            # A Block1 block out of sequence: 4.08.
            stray = aiocoap.Message(
                code=Code.POST, uri=f"{base}/sen", payload=good[:64], content_format=286
            )
            stray.opt.block1 = BlockOption.BlockwiseTuple(3, True, 2)
            out_of_sequence = await ctx.request(stray, handle_blockwise=False).response
            after = await send(code=Code.GET, uri=f"{base}/crts")
        finally:
            await ctx.shutdown()
    for name, (response, expected) in cases.items():
        assert response.code == expected, f"{name}: {response.code} {response.payload!r}"
        if not expected.is_successful():
            assert response.payload, f"{name}: no diagnostic"
    assert too_big.code == Code.REQUEST_ENTITY_TOO_LARGE
    assert too_big.opt.size1 == 4096
    assert out_of_sequence.code == Code.REQUEST_ENTITY_INCOMPLETE
    assert after.code == Code.CONTENT  # the server still serves


async def test_pop_required_and_proven(deployment: Deployment) -> None:
    device = deployment.device("pop")
    async with running_coaps(deployment, require_pop=True) as run:
        async with run.client(device) as est:
            with pytest.raises(EstClientError) as refused:
                key = ec.generate_private_key(ec.SECP256R1())
                await est.enroll(key=key, subject=device.subject())
            assert refused.value.status == "4.01"
            certs = await est.enroll(
                key=ec.generate_private_key(ec.SECP256R1()), subject=device.subject("pop"), pop=True
            )
            assert certs[0].subject == device.subject("pop")
            # provision() reads csrattrs, sees challengePassword, and adds PoP itself (and
            # takes the subject from the template there).
            assert (await est.provision()).certificate.subject == device.subject()


async def test_pending_503_max_age_then_approval(deployment: Deployment) -> None:
    device = deployment.device("pending")
    async with running_coaps(deployment, approval="manual", retry_after=1) as run:
        ctx = await raw_context(run, device)
        csr = csr_for(device, "waiting")
        request = dict(
            code=Code.POST,
            uri=f"{run.origin}/.well-known/est/sen",
            payload=csr,
            content_format=286,
        )
        try:
            first = await ctx.request(aiocoap.Message(**request)).response  # type: ignore[arg-type]
            assert first.code == Code.SERVICE_UNAVAILABLE
            assert first.opt.max_age == 1
            with Store.open(deployment.paths.store, create=False) as store:
                (pending,) = store.pending_list()
                store.approve(pending.id)
            await asyncio.sleep(0.1)
            second = await ctx.request(aiocoap.Message(**request)).response  # type: ignore[arg-type]
        finally:
            await ctx.shutdown()
    assert second.code == Code.CHANGED
    subjects = {c.subject for c in pkcs7.decode_certs_only(second.payload)}
    assert device.subject("waiting") in subjects


async def test_untrusted_device_is_refused_at_dtls(deployment: Deployment, tmp_path: Path) -> None:
    from estcoap.idevid import DeviceMaker

    stranger_cert, stranger_key = DeviceMaker.create("rogue maker").issue_idevid("rogue")
    stranger = write_identity(tmp_path, "rogue", stranger_cert, stranger_key)
    async with running_coaps(deployment) as run:
        async with run.client(stranger, timeout=5) as est:
            with pytest.raises(EstClientError):
                await est.cacerts()
        # and the server keeps serving a trusted device
        async with run.client(deployment.device("fine")) as est:
            assert await est.cacerts()
