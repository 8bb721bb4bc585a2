"""Errors a DTLS association reports. Transports hand them to aiocoap, so callers see them."""

from __future__ import annotations


class DtlsError(Exception):
    """Base class of every DTLS failure."""


class HandshakeFailed(DtlsError):
    """The handshake was refused or broke (bad certificate, no shared cipher, alert)."""


class HandshakeTimeout(DtlsError):
    """No handshake completed within the configured time."""


class PeerNameMismatch(HandshakeFailed):
    """The server certificate does not name the host we meant to reach."""


class ConnectionClosed(DtlsError):
    """The association ended: close_notify, replacement, idle timeout or shutdown."""
