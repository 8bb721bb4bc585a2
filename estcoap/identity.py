"""The re-enrollment identity rule (RFC 7030 s4.2.2): a renewal keeps its names.

Used by every service that renews: the LocalCA, and the gateway, whose upstream sees
only the RA and so cannot check it itself.
"""

from __future__ import annotations

from cryptography import x509

from .codec.pkcs10 import Csr
from .service import Forbidden


def subject_alt_name(certificate: x509.Certificate) -> x509.SubjectAlternativeName | None:
    """The certificate's subjectAltName extension, or None when it has none."""
    try:
        return certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def check_same_identity(csr: Csr, current: x509.Certificate) -> None:
    """Refuse (Forbidden) a re-enrollment CSR whose Subject or subjectAltName differs
    from the certificate being renewed. SAN order does not matter."""
    if csr.subject != current.subject:
        raise Forbidden(
            "re-enroll identity mismatch: CSR subject "
            f"{csr.subject.rfc4514_string()!r} differs from the certificate's "
            f"{current.subject.rfc4514_string()!r}"
        )
    if _san_set(csr.subject_alt_name) != _san_set(subject_alt_name(current)):
        raise Forbidden(
            "re-enroll identity mismatch: CSR subjectAltName differs from the certificate's"
        )


def _san_set(san: x509.SubjectAlternativeName | None) -> frozenset[x509.GeneralName]:
    return frozenset(san) if san is not None else frozenset()
