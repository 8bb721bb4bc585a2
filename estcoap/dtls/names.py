"""Server identity check (RFC 6125 style, reduced): pyOpenSSL verifies the chain, not the name."""

from __future__ import annotations

import ipaddress

from cryptography import x509


def _dns_matches(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        # a wildcard stands for exactly one leftmost label
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host


def certificate_names_host(certificate: x509.Certificate, host: str) -> bool:
    """True if the certificate's subjectAltName covers `host` (an IP literal or a DNS name)."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return any(_dns_matches(name, host) for name in san.get_values_for_type(x509.DNSName))
    return address in san.get_values_for_type(x509.IPAddress)


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return False
    return True
