"""An EST server bound to your own CA through the EstService interface, served over
EST-coaps and HTTPS at once. Replace `MyCA` with calls into your CA or HSM.

    python examples/server.py --ca-dir ./myca --trust-clients maker.pem \
        --coaps 127.0.0.1:5684 --https 127.0.0.1:8443

The first run creates ./myca (CA key, CA cert, a server certificate for 127.0.0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import secrets
import signal
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from estcoap import service as est
from estcoap.ca import init_ca
from estcoap.coap.server import start_coaps_server
from estcoap.codec.csrattrs import KeyRequest, build_csrattrs
from estcoap.https import start_https_server
from estcoap.identity import check_same_identity
from estcoap.trust import ClientTrust


class MyCA:
    """A minimal EstService: signs every CSR from an authenticated device for 30 days."""

    # What the fronts ask of a service besides the operations (estcoap.service.EstService):
    # it issues, so a front checks each CSR's signature first ...
    front_checks_csr_signature = True

    def __init__(self, ca_cert: x509.Certificate, ca_key, device_makers: list[x509.Certificate]):  # type: ignore[no-untyped-def]
        self.ca_cert, self.ca_key = ca_cert, ca_key
        # ... and the certificates devices may present: makers' IDevIDs, and ours to
        # re-enroll. The fronts verify chains against it in the handshake and note there
        # what they verified, so the checks below do not repeat the signature work.
        self.client_trust = ClientTrust([*device_makers, ca_cert])

    def has_label(self, label: str | None) -> bool:
        return label is None

    async def cacerts(self, label: str | None) -> est.Certificates:
        return est.Certificates((self.ca_cert,))

    async def csrattrs(self, label: str | None, peer: est.Peer) -> est.CsrAttributes:
        der = build_csrattrs(
            challenge_password=False,
            key=KeyRequest.ec(ec.SECP256R1()),
            signature_hash=hashes.SHA256(),
        )
        return est.CsrAttributes(der)

    async def enroll(self, request: est.EnrollRequest) -> est.Certificates:
        if not self.client_trust.trusted(request.peer.certificates):
            raise est.Unauthenticated("enrollment needs a device certificate from a known maker")
        return est.Certificates((self._issue(request.csr.subject, request.csr.public_key),))

    async def reenroll(self, request: est.EnrollRequest) -> est.Certificates:
        current = request.peer.certificate
        if current is None or not self.client_trust.issued_by(current, self.ca_cert):
            raise est.Unauthenticated("re-enrollment needs a certificate this CA issued")
        check_same_identity(request.csr, current)  # RFC 7030 s4.2.2: same Subject and SAN
        return est.Certificates((self._issue(request.csr.subject, request.csr.public_key),))

    async def serverkeygen(self, request: est.EnrollRequest) -> est.KeyAndCertificate:
        await self.enroll(request)  # the same authorization
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._issue(request.csr.subject, key.public_key())
        pkcs8 = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return est.KeyAndCertificate(pkcs8, est.KeyFormat.PKCS8, est.Certificates((cert,)))

    def _issue(self, subject: x509.Name, public_key) -> x509.Certificate:  # type: ignore[no-untyped-def]
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.ca_cert.subject)
            .public_key(public_key)
            .serial_number(secrets.randbits(127) | 1)
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(self.ca_key, hashes.SHA256())
        )


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ca-dir", required=True, type=Path)
    parser.add_argument("--trust-clients", required=True, help="device makers' CA (PEM)")
    parser.add_argument("--coaps", default="127.0.0.1:5684")
    parser.add_argument("--https", default="127.0.0.1:8443")
    args = parser.parse_args()

    if not (args.ca_dir / "ca.pem").exists():  # reuse `ca init` for keys and a server cert
        init_ca(args.ca_dir, ["127.0.0.1", "localhost"], ca_name="My CA")
    ca_cert = x509.load_pem_x509_certificate((args.ca_dir / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((args.ca_dir / "ca.key").read_bytes(), None)
    makers = x509.load_pem_x509_certificates(Path(args.trust_clients).read_bytes())
    service = MyCA(ca_cert, ca_key, makers)
    assert isinstance(service, est.EstService)  # the Protocol is runtime-checkable

    server_cert, server_key = args.ca_dir / "server.pem", args.ca_dir / "server.key"
    # Both fronts verify client certificates against service.client_trust.anchors.
    coaps = await start_coaps_server(
        service, [host_port(args.coaps)], cert_chain=server_cert, key=server_key
    )
    https = await start_https_server(
        service, *host_port(args.https), cert_chain=server_cert, key=server_key
    )
    print(f"serving {coaps.url} and {https.url}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await coaps.close()
    await https.close()


if __name__ == "__main__":
    asyncio.run(main())
