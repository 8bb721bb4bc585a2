"""PSK devices through the gateway (issue 15): a device with only a pre-shared key enrolls
over the gateway's PSK DTLS front; the gateway holds it to the subject its key is bound to,
forwards it as an RA naming it in EST-Requester, and the LocalCA upstream holds it to that
identity too. The key is one-time, recorded in FILE.spent, and the gateway re-reads its
PSK file when it changes. Real UDP and TCP on loopback; a real LocalCA upstream."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from estcoap.ca import LocalCA
from estcoap.ca.ra import issue_ra
from estcoap.client import EstClient
from estcoap.client.api import EstClientError
from estcoap.codec.names import parse_name
from estcoap.gateway import UpstreamSettings, open_upstream
from estcoap.gateway.psk_devices import PskDevices, PskFileError
from estcoap.gateway.wiring import Gateway, start_gateway, start_psk_front
from estcoap.https import start_https_server
from tests.conftest import require
from tests.integration.coaps_fixtures import make_deployment

require("DTLSSocket", "PSK DTLS runs on DTLSSocket (the psk extra)")

KEY_HEX = "000102030405060708090a0b0c0d0e0f"
KEY = bytes.fromhex(KEY_HEX)


@dataclass
class Running:
    ca: LocalCA
    gateway: Gateway
    psk_file: Path

    @property
    def psk_url(self) -> str:
        assert self.gateway.psk_server is not None
        return self.gateway.psk_server.url

    def client(self, identity: str, key: bytes = KEY) -> EstClient:
        return EstClient(self.psk_url, psk=(identity, key), timeout=20)


def write_psk_file(path: Path, lines: list[str]) -> None:
    path.write_text("# IDENTITY KEY SUBJECT\n" + "".join(f"{line}\n" for line in lines))
    path.chmod(0o600)


@contextlib.asynccontextmanager
async def gateway_with_psk(root: Path) -> AsyncIterator[Running]:
    deployment = make_deployment(root)
    paths = deployment.paths
    ca = LocalCA.open(paths.dir)
    https = await start_https_server(
        ca, "127.0.0.1", 0, cert_chain=paths.server_cert, key=paths.server_key
    )
    ra = issue_ra(paths.dir, name="factory gateway")
    ca_cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    upstream = open_upstream(
        UpstreamSettings(
            url=https.url, trust=[ca_cert], ra_chain=[ra.certificate, ca_cert], ra_key=ra.key
        ),
    )
    gateway = await start_gateway(
        upstream, [("127.0.0.1", 0)], cert_chain=paths.server_cert, key=paths.server_key
    )
    psk_file = root / "devices.psk"
    write_psk_file(psk_file, [f"sensor-1 {KEY_HEX} serialNumber=sensor-1,CN=sensor one"])
    await start_psk_front(gateway, ("127.0.0.1", 0), PskDevices(psk_file))
    try:
        yield Running(ca, gateway, psk_file)
    finally:
        await gateway.close()
        await https.close()
        ca.close()


async def test_a_psk_device_enrolls_through_the_gateway_once(tmp_path: Path) -> None:
    async with gateway_with_psk(tmp_path) as running:
        async with running.client("sensor-1") as est:
            # Another subject: the gateway refuses it before anything goes upstream.
            with pytest.raises(EstClientError) as refused:
                await est.enroll(
                    key=ec.generate_private_key(ec.SECP256R1()), subject=parse_name("CN=sensor two")
                )
            assert refused.value.status == "4.03"
            assert "subject must be serialNumber=sensor-1,CN=sensor one" in (
                refused.value.diagnostic
            )
            # The template comes from the upstream CA, told the device's identity.
            provisioned = await est.provision()
        assert provisioned.certificate.subject == parse_name("serialNumber=sensor-1,CN=sensor one")
        record = running.ca.store.find_issued(provisioned.certificate.serial_number)
        assert record is not None and record.requester == "cert:CN=factory gateway"
        assert (running.psk_file.parent / "devices.psk.spent").read_text() == "sensor-1\n"

        async with running.client("sensor-1") as est:  # spent: no key at the handshake
            with pytest.raises(EstClientError, match="handshake refused"):
                await est.cacerts()
        # A gateway started again keeps it spent.
        assert PskDevices(running.psk_file).key("sensor-1") is None


async def test_devices_added_to_the_file_count_without_a_restart(tmp_path: Path) -> None:
    async with gateway_with_psk(tmp_path) as running:
        async with running.client("sensor-2") as est:
            with pytest.raises(EstClientError, match="handshake refused"):
                await est.cacerts()
        write_psk_file(
            running.psk_file,
            [
                f"sensor-1 {KEY_HEX} serialNumber=sensor-1,CN=sensor one",
                f"sensor-2 {KEY_HEX} serialNumber=sensor-2",
            ],
        )
        os.utime(running.psk_file, ns=(1, 1))  # a new stamp even within one clock tick
        async with running.client("sensor-2") as est:
            provisioned = await est.provision()
        assert provisioned.certificate.subject == parse_name("serialNumber=sensor-2")


@pytest.mark.parametrize(
    "line, why",
    [
        ("sensor-1 00 CN=x", "16 to 32 bytes"),
        ("sensor-1 zz CN=x", "not hex"),
        (f"sensor-1 {KEY_HEX} CN", "subject"),
        (f"{'x' * 33} {KEY_HEX} CN=x", "longer than 32 bytes"),
    ],
)
def test_a_psk_file_that_cannot_be_used_names_its_line(tmp_path: Path, line: str, why: str) -> None:
    path = tmp_path / "devices.psk"
    write_psk_file(path, [line])
    with pytest.raises(PskFileError, match=f"devices.psk:2: .*{why}"):
        PskDevices(path)


def test_a_psk_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "devices.psk"
    write_psk_file(path, [f"sensor-1 {KEY_HEX} CN=x"])
    path.chmod(0o644)
    with pytest.raises(PskFileError, match="chmod 600"):
        PskDevices(path)
