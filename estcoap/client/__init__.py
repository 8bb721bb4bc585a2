"""The EST client: EstClient drives a ClientTransport picked by the URL scheme."""

from .api import (
    EstClient,
    EstClientError,
    EstPendingTimeout,
    Provisioned,
    build_csr,
    fingerprint,
    generate_key,
    load_certificates,
    load_private_key,
    parse_subject,
)

__all__ = [
    "EstClient",
    "EstClientError",
    "EstPendingTimeout",
    "Provisioned",
    "build_csr",
    "fingerprint",
    "generate_key",
    "load_certificates",
    "load_private_key",
    "parse_subject",
]
