"""The optional PSK DTLS engine (DTLSSocket, which wraps tinydtls) and the one line that
says how to get it. Server front, client and CLI all ask here before using it."""

from __future__ import annotations

import importlib.util

MISSING = (
    "PSK DTLS needs DTLSSocket: pip install 'estcoap[psk]' (it builds tinydtls from "
    "source, so first: apt-get install autoconf automake libtool gcc)"
)


class PskUnavailable(RuntimeError):
    """DTLSSocket is not installed; str() is the one line that says how to install it."""


def require_dtlssocket() -> None:
    if importlib.util.find_spec("DTLSSocket") is None:
        raise PskUnavailable(MISSING)


def parse_psk_key(text: str) -> bytes:
    """A PSK given as hex (spaces and colons between bytes allowed); ValueError of one line."""
    digits = "".join(text.split()).replace(":", "")
    try:
        key = bytes.fromhex(digits)
    except ValueError:
        example = "000102030405060708090a0b0c0d0e0f"
        raise ValueError(f"a PSK is given as hex digits, e.g. {example}") from None
    if not key:
        raise ValueError("the PSK is empty")
    return key
