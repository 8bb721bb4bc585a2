"""A device maker's CA and IDevID certificates (IEEE 802.1AR style) for demos and tests.

Real deployments get IDevIDs from the device manufacturer; this makes a
throwaway maker so the whole flow can run on one machine.
"""

from __future__ import annotations

import datetime
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .ca.create import self_signed_ca

_HOUR = datetime.timedelta(hours=1)


def _serial() -> int:
    return secrets.randbits(127) | 1


@dataclass(frozen=True)
class DeviceMaker:
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, name: str = "estcoap demo device maker", days: int = 3650) -> DeviceMaker:
        key = ec.generate_private_key(ec.SECP256R1())
        return cls(self_signed_ca(key, name, validity_days=days), key)

    def issue_idevid(
        self,
        serial_number: str,
        key: ec.EllipticCurvePrivateKey | None = None,
        *,
        days: int = 3650,
        not_after: datetime.datetime | None = None,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """An IDevID for one device: subject serialNumber=<serial_number>, clientAuth."""
        key = key or ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(_serial())
            .not_valid_before(now - _HOUR)
            .not_valid_after(not_after or now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.private_key.public_key()),
                False,
            )
            .sign(self.private_key, hashes.SHA256())
        )
        return cert, key
