"""X.509 v2 CRLs of this CA (RFC 5280 s5), built from its revocation records. No I/O.

A CRL carries: the CA's name as issuer, thisUpdate and nextUpdate, a CRL number that the
store hands out per scope (increasing: a relying party keeps the newest), the authority
key identifier of the CA, and per revoked certificate its serial, revocation date, reason
code (absent for unspecified, as s5.3.1 recommends) and invalidity date when known.

Scopes: the complete CRL lists every certificate this CA revoked, under any label; a
label's CRL lists the certificates issued under that label only (labels share the CA's
key and name today). The complete one is what a CRL distribution point names.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..codec.keytypes import PrivateKey
from .keys import signature_hash
from .profile import authority_key_id
from .store import RevocationRecord

DEFAULT_NEXT_UPDATE = dt.timedelta(days=7)
# thisUpdate is backdated a little, as certificates' notBefore, for relying parties whose
# clocks run behind the CA's.
CLOCK_SKEW = dt.timedelta(minutes=5)

_DURATION = re.compile(r"^\s*(?P<number>\d+)\s*(?P<unit>[smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# A CRL must be re-signed within this; more is a mistake (a typo of units, most likely).
MAX_NEXT_UPDATE = dt.timedelta(days=366)


def parse_duration(text: str) -> dt.timedelta:
    """'7d', '12h', '30m', '90s', '2w' or plain seconds; ValueError for anything else,
    zero, or more than a year."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"expected a duration such as 7d, 12h or 30m, got {text!r}")
    seconds = int(match.group("number")) * _UNIT_SECONDS[match.group("unit")]
    if seconds <= 0 or seconds > MAX_NEXT_UPDATE.total_seconds():
        raise ValueError(f"expected a duration from 1 s to 366 days, got {text!r}")
    return dt.timedelta(seconds=seconds)


def build_crl(
    revoked: Iterable[RevocationRecord],
    *,
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    number: int,
    next_update: dt.timedelta = DEFAULT_NEXT_UPDATE,
    now: dt.datetime | None = None,
) -> x509.CertificateRevocationList:
    """The CRL listing the given revocations, signed by the CA key with its usual hash."""
    now = now or dt.datetime.now(dt.UTC)
    # The entries go in through the constructor: add_revoked_certificate copies the
    # builder's list each time: 100,000 entries took 12 s that way, 2 s so
    # (bench/revocation.py).
    builder = x509.CertificateRevocationListBuilder(
        issuer_name=ca_cert.subject,
        last_update=now - CLOCK_SKEW,
        next_update=now + next_update,
        extensions=[
            x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(number)),
            x509.Extension(x509.AuthorityKeyIdentifier.oid, False, authority_key_id(ca_cert)),
        ],
        revoked_certificates=[revoked_entry(record) for record in revoked],
    )
    return builder.sign(ca_key, signature_hash(ca_key))  # type: ignore[arg-type]


def revoked_entry(record: RevocationRecord) -> x509.RevokedCertificate:
    entry = (
        x509.RevokedCertificateBuilder()
        .serial_number(int(record.serial, 16))
        .revocation_date(record.revocation_time)
    )
    if record.reason_flag is not x509.ReasonFlags.unspecified:
        entry = entry.add_extension(x509.CRLReason(record.reason_flag), critical=False)
    invalid = record.invalidity_time
    if invalid is not None:
        entry = entry.add_extension(x509.InvalidityDate(invalid), critical=False)
    return entry.build()


def crl_number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None


def encode(crl: x509.CertificateRevocationList, *, pem: bool) -> bytes:
    return crl.public_bytes(Encoding.PEM if pem else Encoding.DER)


def refresh_due(crl: x509.CertificateRevocationList, now: dt.datetime) -> bool:
    """A served CRL is re-signed once half its validity has passed, long before relying
    parties that fetch it near nextUpdate would find it stale."""
    this_update = crl.last_update_utc
    next_update = crl.next_update_utc
    if next_update is None:
        return True
    return now >= this_update + (next_update - this_update) / 2
