"""The CA key's token fails under concurrent load (issue 19).

test_hsm_ca.py closes the token's sessions between sequential requests; here 20 devices
(10 over CoAPs, 10 over HTTPS) enroll at once against one LocalCA whose key is in
SoftHSM2, and every session of the process on the token is closed twice in the middle,
as an unplugged or reset token would. What must hold: the requests that meet a dead
session are answered 5.03 with Max-Age / 503 with Retry-After (one per closing), the
next ones succeed on a re-opened session, every certificate a device receives and every
one in the store verifies against the CA certificate (nothing else signed), and the
store holds exactly the certificates delivered, each with its audit row: no record of a
request that failed.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import aiocoap
import aiohttp
import pytest
from aiocoap.numbers.codes import Code
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from estcoap.ca import LocalCA
from estcoap.ca.pkcs11key import Pkcs11EcKey
from estcoap.coap.server import start_coaps_server
from estcoap.codec import pkcs7
from estcoap.codec.pkcs10 import build_csr
from estcoap.dtls import DtlsClientConfig, create_client_context
from estcoap.https import start_https_server
from tests.integration import hsm_fixtures
from tests.integration.coaps_fixtures import Device

pytestmark = pytest.mark.timeout(240)

PIN = hsm_fixtures.PIN
token, pin_fixture = hsm_fixtures.token, hsm_fixtures.pin_fixture  # the run's one token

DEVICES_PER_FRONT = 10  # at once on each front: 20 in flight
ROUNDS = 3  # certificates each device must get
CLOSE_AFTER = (15, 35)  # close every session once this many certificates were issued
MAX_REFUSALS = 5  # per device: more would mean the token was not re-opened


@dataclass
class Tally:
    issued: list[x509.Certificate] = field(default_factory=list)
    refused: list[tuple[str, str, str]] = field(default_factory=list)  # front, wait, text
    progress: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def got(self, cert: x509.Certificate) -> None:
        async with self.progress:
            self.issued.append(cert)
            self.progress.notify_all()


def csr_for(subject: x509.Name) -> bytes:
    return build_csr(ec.generate_private_key(ec.SECP256R1()), subject)


def only_certificate(der: bytes) -> x509.Certificate:
    return pkcs7.decode_certs_only(der)[0]


async def coaps_device(url: str, ca: LocalCA, device: Device, tally: Tally) -> None:
    config = DtlsClientConfig(
        trust_anchors=[ca.ca_certificate],
        certificate_chain=[device.certificate],
        private_key=device.key,  # type: ignore[arg-type]
    )
    context = await create_client_context(config)
    try:
        done = refusals = 0
        while done < ROUNDS:
            request = aiocoap.Message(
                code=Code.POST,
                uri=f"{url}/sen",
                payload=csr_for(device.subject(f"c{done}")),
                content_format=286,
            )
            answer = await context.request(request).response
            if answer.code == Code.SERVICE_UNAVAILABLE:
                refusals += 1
                tally.refused.append(
                    ("coaps", str(answer.opt.max_age), answer.payload.decode("utf-8", "replace"))
                )
                assert refusals <= MAX_REFUSALS, tally.refused
                continue  # asked again at once: the session is re-opened by then
            assert answer.code == Code.CHANGED, (answer.code, answer.payload)
            await tally.got(only_certificate(answer.payload))  # 281: PKCS#7 certs-only
            done += 1
    finally:
        await context.shutdown()


async def https_device(url: str, ca_pem: Path, device: Device, tally: Tally) -> None:
    """Authenticated by its IDevID (the server limits concurrent password checks)."""
    tls = ssl.create_default_context(cafile=str(ca_pem))
    tls.load_cert_chain(device.cert_path, device.key_path)
    headers = {"Content-Type": "application/pkcs10", "Content-Transfer-Encoding": "base64"}
    connector = aiohttp.TCPConnector(ssl=tls, limit=1)
    async with aiohttp.ClientSession(connector=connector) as http:
        done = refusals = 0
        while done < ROUNDS:
            body = base64.encodebytes(csr_for(device.subject(f"h{done}")))
            async with http.post(f"{url}/simpleenroll", data=body, headers=headers) as answer:
                status, text = answer.status, await answer.read()
                retry_after = answer.headers.get("Retry-After", "")
            if status == 503:
                refusals += 1
                tally.refused.append(("https", retry_after, text.decode("utf-8", "replace")))
                assert refusals <= MAX_REFUSALS, tally.refused
                continue
            assert status == 200, (status, text)
            await tally.got(only_certificate(base64.b64decode(text)))
            done += 1


async def close_sessions_midway(key: Pkcs11EcKey, tally: Tally) -> list[int]:
    """Close every session when CLOSE_AFTER[i] certificates were issued; returns how many
    had been issued at each closing."""
    at = []
    for threshold in CLOSE_AFTER:
        async with tally.progress:
            await tally.progress.wait_for(lambda t=threshold: len(tally.issued) >= t)
            hsm_fixtures.close_all_sessions(key)
            at.append(len(tally.issued))
    return at


@pytest.mark.parametrize("durable", [False, True], ids=["on-the-loop", "in-threads"])
async def test_token_sessions_closed_under_concurrent_load(
    tmp_path: Path, pin: str, caplog: pytest.LogCaptureFixture, durable: bool
) -> None:
    """durable: fsynced commits, which LocalCA runs in worker threads, so signatures are
    made from several threads while the loop closes the sessions (ca/local.py _call)."""
    deployment = hsm_fixtures.deployment_on_token(tmp_path, f"ca-load-{durable}")
    ca = LocalCA.open(
        deployment.paths.dir,
        trust_clients=[deployment.maker.certificate],
        durable_commits=durable,
    )
    paths = deployment.paths
    key = ca.signing_key
    assert isinstance(key, Pkcs11EcKey)
    coaps = await start_coaps_server(
        ca,
        [("127.0.0.1", 0)],
        cert_chain=paths.server_cert,
        key=paths.server_key,
        trust_anchors=ca.client_trust_anchors(),
    )
    https = await start_https_server(
        ca,
        "127.0.0.1",
        0,
        cert_chain=paths.server_cert,
        key=paths.server_key,
    )
    tally = Tally()
    devices = [deployment.device(f"load-{i}") for i in range(DEVICES_PER_FRONT)]
    web_devices = [deployment.device(f"web-{i}") for i in range(DEVICES_PER_FRONT)]
    try:
        closer = asyncio.create_task(close_sessions_midway(key, tally))
        await asyncio.gather(
            *(coaps_device(coaps.url, ca, device, tally) for device in devices),
            *(https_device(https.url, paths.ca_cert, device, tally) for device in web_devices),
        )
        closed_at = await asyncio.wait_for(closer, 5)
        store = ca.store
        records = [r for r in store.issued_list() if r.operation != "init"]
        issued_rows = [a for a in store.audit_list() if a.event == "issued"]
        pending = store.pending_list()
    finally:
        await https.close()
        await coaps.close()
        ca.close()

    total = 2 * DEVICES_PER_FRONT * ROUNDS
    assert len(tally.issued) == total
    assert all(count < total for count in closed_at), closed_at  # closed in the middle
    # One refusal per closing: the request that met the dead session; the next re-opened it.
    assert len(tally.refused) == len(CLOSE_AFTER), tally.refused
    assert key.token.opened == 1 + len(CLOSE_AFTER)
    for front, wait, text in tally.refused:
        assert int(wait) >= 1, (front, wait)
        assert "signing key is unavailable" in text, (front, text)
    # Nothing signed by anything but the CA key (each signature verified by its public key).
    ca_cert = ca.ca_certificate
    for cert in tally.issued:
        cert.verify_directly_issued_by(ca_cert)
    hsm_fixtures.openssl_verify(paths.ca_cert, tally.issued[0], tmp_path)
    # The store: exactly the certificates delivered, each whole and with its audit row.
    delivered = {format(c.serial_number, "x") for c in tally.issued}
    assert len(delivered) == total
    assert {r.serial.lower() for r in records} == delivered
    for record in records:
        x509.load_der_x509_certificate(record.cert_der).verify_directly_issued_by(ca_cert)
    assert {a.serial.lower() for a in issued_rows if a.serial} >= delivered
    assert len([a for a in issued_rows if a.serial and a.serial.lower() in delivered]) == total
    assert pending == []
    failures = [r.getMessage() for r in caplog.records if r.name == "estcoap.ca.pkcs11key"]
    assert len([m for m in failures if "unavailable: signature failed" in m]) == len(CLOSE_AFTER)
    assert PIN not in " ".join(failures)
