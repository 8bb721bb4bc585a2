"""Proof-of-possession linking (RFC 7030 s3.5, RFC 9148 s3): challengePassword = base64(tls-unique).

Used by every service that sees the device's own channel: the LocalCA, and the
gateway, which must check it downstream because tls-unique does not survive the hop.
"""

from __future__ import annotations

import base64
import hmac

from .codec.pkcs10 import Csr
from .service import Peer, Unauthenticated


class ProofOfPossessionError(Unauthenticated):
    """The CSR is not linked to this channel (missing, unlinkable or wrong challengePassword).

    Still an authentication failure to the service, but not one HTTP credentials can fix:
    the HTTPS front answers it 403 (with this diagnostic) rather than a 401 challenge.
    """


def expected_challenge(tls_unique: bytes) -> bytes:
    return base64.b64encode(tls_unique)


def check_pop(csr: Csr, peer: Peer, *, required: bool) -> bool:
    """Verify the CSR's tls-unique link to this channel. Returns True when PoP was proven.

    A CSR without challengePassword passes unless required. One with it must match.
    """
    password = csr.challenge_password
    if password is None:
        if required:
            raise ProofOfPossessionError(
                "proof-of-possession required: put base64(tls-unique) in challengePassword"
            )
        return False
    if peer.tls_unique is None:
        reason = peer.tls_unique_unavailable or "the channel has no tls-unique"
        raise ProofOfPossessionError(f"proof-of-possession cannot be checked: {reason}")
    if not hmac.compare_digest(password.strip(), expected_challenge(peer.tls_unique)):
        raise ProofOfPossessionError(
            "proof-of-possession failed: challengePassword is not this channel's tls-unique"
        )
    return True
