"""The EST-coaps front (RFC 9148): an aiocoap resource tree that calls an EstService."""

from .site import build_site

__all__ = ["build_site"]
