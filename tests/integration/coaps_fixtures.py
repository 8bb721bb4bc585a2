"""Shared pieces of the EST-coaps tests: a real CA, a device maker, the coap front on DTLS."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from estcoap.ca import CaPaths, LocalCA, init_ca
from estcoap.client import EstClient
from estcoap.coap.server import CoapsServer, start_coaps_server
from estcoap.idevid import DeviceMaker


@dataclass
class Device:
    certificate: x509.Certificate
    key: object
    cert_path: Path
    key_path: Path

    def subject(self, cn: str | None = None) -> x509.Name:
        """A subject the CA's default policy lets this device have: its certificate's
        serialNumber (ca/policy.py), with a CN when given."""
        attributes = list(self.certificate.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER))
        if cn is not None:
            attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
        return x509.Name(attributes)


def write_identity(directory: Path, stem: str, cert: x509.Certificate, key) -> Device:  # type: ignore[no-untyped-def]
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return Device(cert, key, cert_path, key_path)


@dataclass
class Deployment:
    """A CA directory, a device maker whose IDevIDs the CA trusts, and scratch space."""

    root: Path
    paths: CaPaths
    maker: DeviceMaker
    maker_pem: Path

    def device(self, name: str) -> Device:
        cert, key = self.maker.issue_idevid(name)
        return write_identity(self.root, name, cert, key)


def make_deployment(root: Path) -> Deployment:
    paths = init_ca(root / "ca", ["127.0.0.1", "localhost"])
    maker = DeviceMaker.create()
    maker_pem = root / "maker.pem"
    maker_pem.write_bytes(maker.certificate.public_bytes(serialization.Encoding.PEM))
    return Deployment(root, paths, maker, maker_pem)


@dataclass
class RunningCoaps:
    server: CoapsServer
    ca: LocalCA
    deployment: Deployment

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def origin(self) -> str:
        return self.server.url.removesuffix(self.server.root)

    def client(self, device: Device, url: str | None = None, **options: object) -> EstClient:
        return EstClient(
            url or self.url,
            trust=self.deployment.paths.ca_cert,
            cert=device.cert_path,
            key=device.key_path,
            **options,  # type: ignore[arg-type]
        )


@contextlib.asynccontextmanager
async def running_coaps(
    deployment: Deployment,
    *,
    approval: str = "auto",
    require_pop: bool = False,
    labels: tuple[str, ...] = (),
    retry_after: int = 30,
    **server_options: object,
) -> AsyncIterator[RunningCoaps]:
    ca = LocalCA.open(
        deployment.paths.dir,
        approval=approval,
        require_pop=require_pop,
        labels=labels,
        retry_after=retry_after,
        trust_clients=[deployment.maker.certificate],
    )
    server = await start_coaps_server(
        ca,
        [("127.0.0.1", 0)],
        cert_chain=deployment.paths.server_cert,
        key=deployment.paths.server_key,
        trust_anchors=ca.client_trust_anchors(),
        labels=labels,
        **server_options,  # type: ignore[arg-type]
    )
    try:
        yield RunningCoaps(server, ca, deployment)
    finally:
        await server.close()
        ca.close()
