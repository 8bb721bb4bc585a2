"""The gateway's PSK devices: who may enroll through it over PSK DTLS, from a file.

The gateway forwards to a CA it does not own, so it cannot keep PSKs in that CA's store:
the operator gives it a file, one device a line,

    # IDENTITY  KEY (hex, 16 to 32 bytes)               SUBJECT (RFC 4514, the rest of the line)
    sensor-0042 000102030405060708090a0b0c0d0e0f      serialNumber=sensor-0042,CN=sensor-0042

and the gateway holds each device to its subject itself before forwarding it as an RA,
naming it upstream by the subject's identity attribute (serialNumber, else CN) in the
EST-Requester header, so the upstream CA's device rules apply as to a certificate device.

A key is a one-time bootstrap key: the identities spent go to FILE.spent (appended and
fsynced when the certificate came back, before the device gets it), so a restart does not
make them usable again; one request per identity at a time, so two racing requests
cannot both spend it. The file is read again when it changes (checked at each handshake:
a stat), so devices added to it count without a restart.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from cryptography import x509

from estcoap import service as svc
from estcoap.codec.csrattrs import (
    OID_CERT_REQ_INFO_TEMPLATE,
    CsrAttribute,
    CsrTemplate,
    decode_csrattrs,
    encode_csrattrs,
    requested_template,
    template_attribute,
)
from estcoap.codec.names import IDENTITY_ATTRIBUTES, NameSyntaxError, format_name, parse_name

MAX_IDENTITY_BYTES = 32  # tinydtls' limits (DTLS_PSK_MAX_CLIENT_IDENTITY_LEN, ..._KEY_LEN)
MIN_KEY_BYTES, MAX_KEY_BYTES = 16, 32


class PskFileError(ValueError):
    """A PSK file that cannot be used; str() names the file and line."""


class PskBusy(Exception):
    """Another request with the same PSK identity is being forwarded."""


@dataclass(frozen=True)
class PskDevice:
    identity: str
    key: bytes
    subject: x509.Name

    def __repr__(self) -> str:  # never the key
        return f"PskDevice({self.identity!r}, {format_name(self.subject)!r})"


def parse_psk_file(text: str, source: str) -> dict[str, PskDevice]:
    devices: dict[str, PskDevice] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{number}"
        parts = line.split(None, 2)
        if len(parts) != 3:
            raise PskFileError(f"{where}: expected IDENTITY KEYHEX SUBJECT")
        identity, key_hex, subject_text = parts
        if len(identity.encode()) > MAX_IDENTITY_BYTES:
            raise PskFileError(f"{where}: the identity is longer than {MAX_IDENTITY_BYTES} bytes")
        try:
            key = bytes.fromhex(key_hex)
        except ValueError:
            raise PskFileError(f"{where}: the key is not hex") from None
        if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
            raise PskFileError(f"{where}: a key is {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes")
        try:
            subject = parse_name(subject_text)
        except NameSyntaxError as exc:
            raise PskFileError(f"{where}: subject: {exc}") from None
        if not list(subject):
            raise PskFileError(f"{where}: the subject is empty")
        if identity in devices:
            raise PskFileError(f"{where}: identity {identity!r} is listed twice")
        devices[identity] = PskDevice(identity, key, subject)
    return devices


class PskDevices:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.spent_path = Path(f"{self.path}.spent")
        self._stamp: tuple[int, int] | None = None
        self._devices: dict[str, PskDevice] = {}
        self._spent: set[str] = set()
        self._busy: set[str] = set()
        self._refresh()  # a file that cannot be used is refused at the start

    def _read_text(self, path: Path) -> str:
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""
        except (OSError, UnicodeDecodeError) as exc:
            raise PskFileError(f"{path}: cannot read it: {exc}") from None

    def _refresh(self) -> None:
        try:
            stat = self.path.stat()
        except OSError as exc:
            raise PskFileError(f"{self.path}: cannot read it: {exc.strerror}") from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        if stat.st_mode & 0o077:
            raise PskFileError(f"{self.path}: holds keys, so others must not read it (chmod 600)")
        self._devices = parse_psk_file(self._read_text(self.path), str(self.path))
        self._spent = set(self._read_text(self.spent_path).split())
        self._stamp = stamp

    def device(self, identity: str) -> PskDevice | None:
        """The device with this identity if its key is unspent, else None."""
        if identity in self._spent:
            return None
        return self._devices.get(identity)

    def key(self, identity: str) -> bytes | None:
        """For the handshake: the key, re-reading the file when it changed; None when the
        identity is unknown or spent (the handshake then fails). A file broken while the
        gateway runs keeps the devices read before."""
        with contextlib.suppress(PskFileError):
            self._refresh()
        device = self.device(identity)
        return device.key if device is not None else None

    @contextlib.contextmanager
    def spending(self, identity: str) -> Iterator[None]:
        """Hold the identity while its request is forwarded; the caller calls spend()
        when a certificate came back."""
        if identity in self._busy:
            raise PskBusy(identity)
        self._busy.add(identity)
        try:
            yield
        finally:
            self._busy.discard(identity)

    def spend(self, identity: str) -> None:
        """Record the key as used, on disk first: a crash after this never lets it
        enroll again."""
        fd = os.open(self.spent_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{identity}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self._spent.add(identity)


# ---- what Upstream asks of them ----------------------------------------------------------

Answer = TypeVar("Answer")


def psk_device_of(devices: PskDevices | None, peer: svc.Peer) -> PskDevice:
    """The device a PSK peer authenticated as (the handshake found its key); refused when
    its key was spent or removed since."""
    assert peer.psk_identity is not None
    device = devices.device(peer.psk_identity) if devices is not None else None
    if device is None:
        raise svc.Forbidden(
            f"PSK identity {peer.psk_identity!r} is spent or unknown: enroll with a new key"
        )
    return device


def requester_attribute(device: PskDevice) -> x509.NameAttribute | None:
    """How the upstream CA is told who the device is: its subject's serialNumber, else CN."""
    for oid in IDENTITY_ATTRIBUTES:
        found = device.subject.get_attributes_for_oid(oid)
        if len(found) == 1:
            return found[0]
    return None


async def forward_psk(
    devices: PskDevices | None,
    request: svc.EnrollRequest,
    forward: Callable[[], Awaitable[Answer]],
) -> Answer:
    """Forward a PSK device's enrollment if its CSR asks for the subject its key is bound
    to; the key is spent when a certificate comes back (not for a pending answer)."""
    device = psk_device_of(devices, request.peer)
    assert devices is not None
    if request.csr.subject != device.subject:
        raise svc.Forbidden(
            f"subject must be {format_name(device.subject)} (the subject PSK identity "
            f"{device.identity!r} is bound to); the CSR asks for "
            f"{format_name(request.csr.subject) or 'none'}"
        )
    try:
        with devices.spending(device.identity):
            answer = await forward()
            if not isinstance(answer, svc.Pending):
                devices.spend(device.identity)
            return answer
    except PskBusy:
        raise svc.Forbidden(
            f"another request with PSK identity {device.identity!r} is being served"
        ) from None


def with_bound_subject(csrattrs_der: bytes | None, device: PskDevice) -> bytes:
    """The upstream's CSR attributes with a template naming the whole subject the key is
    bound to (the upstream was told only the identity attribute, so its template names
    only that), keeping what else it asked for."""
    items = decode_csrattrs(csrattrs_der) if csrattrs_der else ()
    bound = CsrTemplate.build(subject=device.subject).subject
    given = requested_template(items)
    template = replace(given, subject=bound) if given is not None else CsrTemplate(bound)
    kept = [
        item
        for item in items
        if not (isinstance(item, CsrAttribute) and item.oid == OID_CERT_REQ_INFO_TEMPLATE)
    ]
    return encode_csrattrs([*kept, template_attribute(template)])
