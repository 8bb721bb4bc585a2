"""The relying side of revocation: is this chain revoked, and why?

One check that the CA's fronts, the gateway, the proxy and the client share. It answers
from two kinds of source, each a dict keyed by the issuer's name, then a set or dict of
serials, so a lookup costs the same for a CRL of ten entries or of a hundred thousand:

* CRL files an operator gives (`--crl FILE`, PEM or DER): typically a device maker's CRL
  for its IDevIDs, or an upstream CA's. Each is verified against its issuer among the
  trust anchors (issuer name, signature, thisUpdate, nextUpdate) and reloaded when the file
  changes (its inode, size or mtime; one stat per check, about 4 us).
* The records of a CA in this process (LocalCA's revocation_of), for what it issued.

Fail closed: a CRL that is stale (past its nextUpdate), badly signed, from an issuer that
is not a trust anchor, or unreadable is refused when loaded (CrlError: one line, at
start) and, when a reload finds it so, logged at ERROR; from then on every chain through
that issuer is refused as "cannot check revocation" until a good CRL is in the file. Its
devices cannot enroll meanwhile, which is the point: a lapsed CRL must not quietly stop
protecting anyone. Only the last good CRL of a file is forgotten; other files stand.

Sans-IO apart from reading the files it was given; the clock is injectable for tests.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from .codec.names import format_name

log = logging.getLogger(__name__)

# A CRL signed a little ahead of our clock is still taken: clocks of CA hosts and relying
# hosts drift, and refusing a fresh CRL would refuse every device of that issuer.
CLOCK_SKEW = dt.timedelta(minutes=5)

Clock = Callable[[], dt.datetime]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CrlError(ValueError):
    """A CRL that cannot be used; str() is one line naming the file and why."""


@dataclass(frozen=True)
class Revocation:
    """Why a certificate of a chain is refused.

    reason: the RFC 5280 name (keyCompromise, superseded, ...), "unspecified" when the
    entry gives none; None when the revocation could not be checked at all (then
    `problem` says why, e.g. a stale CRL).
    """

    serial: int
    subject: str
    issuer: str
    reason: str | None
    revoked_at: str | None = None
    source: str = ""
    problem: str | None = None

    @property
    def checked(self) -> bool:
        """False when this is a refusal for want of a usable CRL, not a revocation."""
        return self.problem is None

    def describe(self) -> str:
        """One line for a diagnostic: "certificate 1a2b (CN=dev1) is revoked (keyCompromise)"."""
        who = f"certificate {self.serial:x} ({self.subject})"
        if self.problem is not None:
            return f"{who}: cannot check revocation: {self.problem}"
        when = f" since {self.revoked_at}" if self.revoked_at else ""
        return f"{who} is revoked ({self.reason}){when}"


class RevocationRecordLike(Protocol):
    """What a CA's records say of a revoked certificate (ca/store.py RevocationRecord)."""

    @property
    def reason(self) -> str: ...

    @property
    def revoked_at(self) -> str: ...


# serial -> the record when revoked, else None (LocalCA.revocation_of; fast: in memory)
RecordsLookup = Callable[[int], RevocationRecordLike | None]


@dataclass(frozen=True)
class VerifiedCrl:
    """One CRL, verified, as a dict of its revoked serials -> (reason, revocation date)."""

    issuer: x509.Name
    revoked: dict[int, tuple[str, str]]
    this_update: dt.datetime
    next_update: dt.datetime
    number: int | None
    source: str

    def is_stale(self, now: dt.datetime) -> bool:
        return now > self.next_update

    def stale_problem(self) -> str:
        return (
            f"the CRL of {self.issuer.rfc4514_string()} ({self.source}) is stale: its "
            f"nextUpdate {_iso(self.next_update)} has passed; give a current one"
        )


def parse_crl(data: bytes, source: str) -> x509.CertificateRevocationList:
    """A CRL from PEM or DER bytes; CrlError names the source."""
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise CrlError(f"{source}: not a CRL (neither PEM nor DER X509 CRL)") from None


def verify_crl(
    crl: x509.CertificateRevocationList,
    anchors: Sequence[x509.Certificate],
    source: str,
    now: dt.datetime | None = None,
) -> VerifiedCrl:
    """The CRL's revoked serials, once it is shown to be current and signed by one of the
    anchors whose subject is its issuer; CrlError (one line) otherwise."""
    now = now or _utc_now()
    issuer = crl.issuer.rfc4514_string()
    candidates = [a for a in anchors if a.subject == crl.issuer]
    if not candidates:
        raise CrlError(f"{source}: its issuer {issuer} is not one of the trust anchors")
    if not any(_signed_by(crl, anchor) for anchor in candidates):
        raise CrlError(f"{source}: bad signature: not signed by the trust anchor {issuer}")
    try:
        crl.extensions.get_extension_for_oid(ExtensionOID.DELTA_CRL_INDICATOR)
    except x509.ExtensionNotFound:
        pass
    else:
        raise CrlError(f"{source}: a delta CRL; give the complete CRL of {issuer}")
    this_update = crl.last_update_utc
    next_update = crl.next_update_utc
    if this_update > now + CLOCK_SKEW:
        raise CrlError(f"{source}: its thisUpdate {_iso(this_update)} is in the future")
    if next_update is None:
        raise CrlError(f"{source}: no nextUpdate (RFC 5280 s5.1.2.5 requires one)")
    if now > next_update:
        raise CrlError(
            f"{source}: stale: its nextUpdate {_iso(next_update)} has passed; "
            f"give a current CRL of {issuer}"
        )
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = None
    return VerifiedCrl(crl.issuer, _entries(crl), this_update, next_update, number, source)


def _signed_by(crl: x509.CertificateRevocationList, anchor: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(anchor.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):  # a key type that cannot sign CRLs
        return False


def _entries(crl: x509.CertificateRevocationList) -> dict[int, tuple[str, str]]:
    revoked: dict[int, tuple[str, str]] = {}
    for entry in crl:
        try:
            reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.value
        except x509.ExtensionNotFound:
            reason = "unspecified"
        if reason == "removeFromCRL":  # only meaningful in delta CRLs, which we refuse
            continue
        revoked[entry.serial_number] = (reason, _iso(entry.revocation_date_utc))
    return revoked


def _iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class CrlFile:
    """One `--crl FILE`: its last good CRL, reloaded when the file changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.crl: VerifiedCrl | None = None
        self.error: str | None = None  # why the file's current content is refused
        self.issuer: x509.Name | None = None  # of the last good CRL: whom a failure blocks
        self._stamp: tuple[int, int, int] | None = None

    def _current_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def changed(self) -> bool:
        return self._current_stamp() != self._stamp

    def load(self, anchors: Sequence[x509.Certificate], now: dt.datetime) -> VerifiedCrl:
        """Read and verify the file; on failure the last good CRL is dropped (fail
        closed for its issuer) and CrlError says why."""
        self._stamp = self._current_stamp()
        try:
            try:
                data = self.path.read_bytes()
            except OSError as exc:
                raise CrlError(f"{self.path}: cannot read it: {exc.strerror or exc}") from None
            crl = verify_crl(parse_crl(data, str(self.path)), anchors, str(self.path), now)
        except CrlError as exc:
            self.crl, self.error = None, str(exc)
            raise
        self.crl, self.error, self.issuer = crl, None, crl.issuer
        return crl


class RevocationChecker:
    """Answers "is this chain revoked?" from CRL files and a CA's own records.

    anchors: the trust anchors a CRL must be signed by (the same the fronts verify client
    chains against). Loading is strict: CrlError at construction for any unusable file.
    """

    def __init__(
        self,
        anchors: Sequence[x509.Certificate] = (),
        crl_files: Iterable[str | Path] = (),
        *,
        clock: Clock = _utc_now,
    ) -> None:
        self.anchors = tuple(anchors)
        self._clock = clock
        self._files: list[CrlFile] = []
        self._by_issuer: dict[x509.Name, list[VerifiedCrl]] = {}
        self._blocked: dict[x509.Name, str] = {}  # issuer -> why its CRL is unusable
        self._records: dict[x509.Name, RecordsLookup] = {}
        self._stale_logged: set[tuple[str, dt.datetime]] = set()
        self.reloads = 0
        self.add_crl_files(crl_files)

    def add_crl_files(self, paths: Iterable[str | Path]) -> None:
        """Load more CRL files; CrlError (one line) for the first that cannot be used."""
        now = self._clock()
        for path in paths:
            crl_file = CrlFile(path)
            crl_file.load(self.anchors, now)
            self._files.append(crl_file)
        self._index()

    def add_records(self, issuer: x509.Certificate, lookup: RecordsLookup) -> None:
        """Certificates issued by `issuer` are also checked with lookup(serial)."""
        self._records[issuer.subject] = lookup

    @property
    def crl_files(self) -> tuple[CrlFile, ...]:
        return tuple(self._files)

    def refresh(self, *, force: bool = False) -> None:
        """Reload the files that changed on disk since they were read (force: all of them,
        e.g. on SIGHUP or once the anchors changed)."""
        changed = [f for f in self._files if force or f.changed()]
        if not changed:
            return
        now = self._clock()
        for crl_file in changed:
            try:
                crl = crl_file.load(self.anchors, now)
            except CrlError as exc:
                who = crl_file.issuer.rfc4514_string() if crl_file.issuer else "its issuer"
                log.error(
                    "CRL reload refused: %s; refusing the devices of %s until it is fixed", exc, who
                )
            else:
                log.info(
                    "CRL reloaded: %s (%d revoked, number %s)",
                    crl_file.path,
                    len(crl.revoked),
                    crl.number,
                )
        self.reloads += 1
        self._index()

    def _index(self) -> None:
        by_issuer: dict[x509.Name, list[VerifiedCrl]] = {}
        blocked: dict[x509.Name, str] = {}
        for crl_file in self._files:
            if crl_file.crl is not None:
                by_issuer.setdefault(crl_file.crl.issuer, []).append(crl_file.crl)
            elif crl_file.issuer is not None and crl_file.error is not None:
                blocked[crl_file.issuer] = crl_file.error
        self._by_issuer, self._blocked = by_issuer, blocked

    def check(self, chain: Sequence[x509.Certificate]) -> Revocation | None:
        """The first certificate of the chain (leaf first) that is revoked, or whose
        revocation cannot be checked because its issuer's CRL is unusable; else None."""
        if self._files:
            self.refresh()
        if not self._by_issuer and not self._blocked and not self._records:
            return None
        now: dt.datetime | None = None
        for cert in chain:
            issuer = cert.issuer
            if issuer == cert.subject:  # a self-signed anchor: nobody above to revoke it
                continue
            blocked = self._blocked.get(issuer)
            if blocked is not None:
                return _revocation(cert, None, problem=blocked)
            for crl in self._by_issuer.get(issuer, ()):
                now = now or self._clock()
                if crl.is_stale(now):
                    self._log_stale(crl)
                    return _revocation(cert, None, problem=crl.stale_problem())
                entry = crl.revoked.get(cert.serial_number)
                if entry is not None:
                    return _revocation(cert, entry[0], entry[1], source=crl.source)
            lookup = self._records.get(issuer)
            if lookup is not None:
                record = lookup(cert.serial_number)
                if record is not None:
                    return _revocation(
                        cert, record.reason, record.revoked_at, source="the CA's records"
                    )
        return None

    def refusal(self, chain: Sequence[x509.Certificate]) -> str | None:
        """check() as the one-line diagnostic a refused peer gets, or None."""
        found = self.check(chain)
        return found.describe() if found is not None else None

    def _log_stale(self, crl: VerifiedCrl) -> None:
        key = (crl.source, crl.next_update)
        if key not in self._stale_logged:  # once per CRL, not once per request
            self._stale_logged.add(key)
            log.error("%s; refusing its devices until then", crl.stale_problem())


def _revocation(
    cert: x509.Certificate,
    reason: str | None,
    revoked_at: str | None = None,
    *,
    source: str = "",
    problem: str | None = None,
) -> Revocation:
    return Revocation(
        serial=cert.serial_number,
        subject=format_name(cert.subject),
        issuer=format_name(cert.issuer),
        reason=reason,
        revoked_at=revoked_at,
        source=source,
        problem=problem,
    )
