"""Symmetric keys shared with clients in advance (RFC 7030 s4.4.1.1), from a file.

One key per line, `KEY_ID_HEX KEY_HEX`, blank lines and `#` comments allowed. The key
id is what a client puts in DecryptKeyIdentifier; the key is an AES key-encryption key
of 16, 24 or 32 bytes. The file holds secrets: keep it readable by the server alone.
"""

from __future__ import annotations

from pathlib import Path

_KEY_SIZES = (16, 24, 32)


class SharedKeysError(ValueError):
    """The file cannot be used; the message names the line."""


def load_shared_keys(path: str | Path) -> dict[bytes, bytes]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise SharedKeysError(f"{path}: cannot read: {exc.strerror}") from exc
    keys: dict[bytes, bytes] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        where = f"{path}:{number}"
        if len(fields) != 2:
            raise SharedKeysError(f"{where}: expected 'KEY_ID_HEX KEY_HEX'")
        try:
            key_id, key = bytes.fromhex(fields[0]), bytes.fromhex(fields[1])
        except ValueError as exc:
            raise SharedKeysError(f"{where}: not hexadecimal") from exc
        if not key_id:
            raise SharedKeysError(f"{where}: the key id is empty")
        if len(key) not in _KEY_SIZES:
            raise SharedKeysError(f"{where}: the key must be 16, 24 or 32 bytes, not {len(key)}")
        if key_id in keys:
            raise SharedKeysError(f"{where}: key id {fields[0]} appears twice")
        keys[key_id] = key
    return keys
