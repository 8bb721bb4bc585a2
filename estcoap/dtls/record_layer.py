"""DTLS 1.2 AEAD record protection done here, so an idle session need not keep OpenSSL.

After the handshake is confirmed, an association can hand its epoch-1 keys to this small
object and drop the OpenSSL connection (~80 KiB of native buffers). Covers the AEAD
suites the server offers: AES-128-CCM_8, AES-128-CCM and AES-128-GCM (RFC 5288, RFC 6655,
RFC 7251), keys from the TLS 1.2 PRF (RFC 5246 s5, s6.3), DTLS sequence numbers and the
anti-replay window of RFC 6347 s4.1.2.6.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM

from .records import HEADER_LEN, Record, RecordHeader

DTLS_1_2 = 0xFEFD
_EXPLICIT_NONCE_LEN = 8
_WINDOW = 64

# cipher name -> (key length, tag length, AEAD constructor taking the key)
_Aead = AESCCM | AESGCM
_SUITES: dict[str, tuple[int, int, Callable[[bytes], _Aead]]] = {
    "ECDHE-ECDSA-AES128-CCM8": (16, 8, lambda key: AESCCM(key, tag_length=8)),
    "ECDHE-ECDSA-AES128-CCM": (16, 16, lambda key: AESCCM(key, tag_length=16)),
    "ECDHE-ECDSA-AES128-GCM-SHA256": (16, 16, AESGCM),
}


def supports(cipher: str | None) -> bool:
    return cipher in _SUITES


def prf_sha256(secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    """TLS 1.2 PRF with SHA-256 (RFC 5246 s5)."""
    seed = label + seed
    # Keyed once, copied per step: OpenSSL 3 makes each new HMAC context slowly (~5 us),
    # a copy of a keyed one is ~1 us; one key block takes four steps.
    keyed = hmac.new(secret, digestmod=hashlib.sha256)
    out = b""
    a = seed
    while len(out) < length:
        step = keyed.copy()
        step.update(a)
        a = step.digest()
        step = keyed.copy()
        step.update(a + seed)
        out += step.digest()
    return out[:length]


class AeadRecordLayer:
    __slots__ = (
        "_seal",
        "_open",
        "_tag_len",
        "_write_salt",
        "_read_salt",
        "_epoch",
        "_write_seq",
        "_top",
        "_bits",
    )

    def __init__(
        self,
        cipher: str,
        master_secret: bytes,
        client_random: bytes,
        server_random: bytes,
        *,
        is_server: bool,
        epoch: int,
        next_write_seq: int,
        highest_read_seq: int,
    ) -> None:
        key_len, self._tag_len, aead = _SUITES[cipher]
        block = prf_sha256(
            master_secret, b"key expansion", server_random + client_random, 2 * key_len + 8
        )
        client_key, server_key = block[:key_len], block[key_len : 2 * key_len]
        client_salt, server_salt = block[2 * key_len : 2 * key_len + 4], block[-4:]
        write_key, read_key = (server_key, client_key) if is_server else (client_key, server_key)
        self._seal = aead(write_key)
        self._open = aead(read_key)
        self._write_salt, self._read_salt = (
            (server_salt, client_salt) if is_server else (client_salt, server_salt)
        )
        self._epoch = epoch
        self._write_seq = next_write_seq
        # everything up to the highest sequence number OpenSSL saw counts as received
        self._top = highest_read_seq
        self._bits = (1 << _WINDOW) - 1

    @staticmethod
    def _aad(epoch: int, seq: int, content_type: int, length: int) -> bytes:
        return struct.pack(
            "!HHIBHH", epoch, seq >> 32, seq & 0xFFFFFFFF, content_type, DTLS_1_2, length
        )

    def protect(self, content_type: int, plaintext: bytes) -> bytes:
        seq = self._write_seq
        self._write_seq += 1
        explicit = struct.pack("!HHI", self._epoch, seq >> 32, seq & 0xFFFFFFFF)
        sealed = self._seal.encrypt(
            self._write_salt + explicit,
            plaintext,
            self._aad(self._epoch, seq, content_type, len(plaintext)),
        )
        body = explicit + sealed
        return (
            struct.pack(
                "!BHHHIH",
                content_type,
                DTLS_1_2,
                self._epoch,
                seq >> 32,
                seq & 0xFFFFFFFF,
                len(body),
            )
            + body
        )

    def _fresh(self, seq: int) -> bool:
        if seq > self._top:
            return True
        offset = self._top - seq
        return offset < _WINDOW and not (self._bits >> offset) & 1

    def _mark(self, seq: int) -> None:
        if seq > self._top:
            shift = seq - self._top
            self._bits = ((self._bits << shift) | 1) & ((1 << _WINDOW) - 1)
            self._top = seq
        else:
            self._bits |= 1 << (self._top - seq)

    def unprotect(self, record: bytes) -> tuple[int, bytes] | None:
        """(content type, plaintext) of one whole record, or None to drop it silently
        (other epoch, replay, too short, bad tag)."""
        header = RecordHeader.parse(record)
        return self.unprotect_scanned(
            (record, header.content_type, header.version, header.epoch, header.sequence)
        )

    def unprotect_scanned(self, scanned: Record) -> tuple[int, bytes] | None:
        """unprotect() for a record that records.scan_records() framed already."""
        record, content_type, version, epoch, seq = scanned
        if epoch != self._epoch or version != DTLS_1_2:
            return None
        sealed_len = len(record) - HEADER_LEN - _EXPLICIT_NONCE_LEN
        if sealed_len < 0 or not self._fresh(seq):
            return None
        plain_len = sealed_len - self._tag_len
        if plain_len < 0:
            return None
        nonce_end = HEADER_LEN + _EXPLICIT_NONCE_LEN
        try:
            plaintext = self._open.decrypt(
                self._read_salt + record[HEADER_LEN:nonce_end],
                record[nonce_end:],
                self._aad(epoch, seq, content_type, plain_len),
            )
        except InvalidTag:
            return None
        self._mark(seq)
        return content_type, plaintext
