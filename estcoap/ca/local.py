"""LocalCA: an EstService that signs with a CA key in this process and records everything.

enroll/reenroll run on the caller's event loop: authorization, one ECDSA signature
and one SQLite commit take well under a millisecond, less than handing them to a
thread would cost. Work that can take long goes to a worker thread: server-side key
generation (RSA), and every commit of a durable store (an fsync each, which would
stall the loop). The Store serialises its own access.

Rules this CA enforces beyond RFC 7030 (which leaves them to the CA):
* A pending request (manual approval) and its answer belong to the requester that made
  it (requester_id: the client certificate, the HTTP user); the same CSR from anyone
  else is refused 4.03/403, so a replayed serverkeygen CSR never gets another's key.
* At most MAX_PENDING_PER_REQUESTER undecided requests per requester (RAs exempt) and
  MAX_PENDING in all; over a cap, 4.03/403 (see the constants for why not 5.03/503).
* Only the newest certificate of a renewal chain re-enrolls; the request that renewed it,
  repeated, gets the same certificate (_renewed_already).
* The issuance policy (policy.py) decides which subject and SAN a requester may have,
  before anything is queued or issued: a device gets its IDevID's identity, password
  users and RAs what their grants give. Renewals keep the certificate's names.
* A manually approved serverkeygen's key is kept KEY_RETENTION_SECONDS after it was
  issued, for repeats, then erased (forget_delivered_keys); a repeat after that is
  refused 4.03/403 with the reason.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ..codec import spki
from ..codec.csrattrs import CsrTemplate, KeyRequest, build_csrattrs
from ..codec.errors import CodecError
from ..codec.names import NameSyntaxError, device_identity, parse_name, parse_requester
from ..codec.operations import Operation
from ..codec.pkcs10 import Csr
from ..identity import check_same_identity
from ..observe.hooks import NO_HOOK, IssuanceHook
from ..pop import check_pop
from ..revocation import RevocationChecker
from ..service import (
    BadRequest,
    Certificates,
    CsrAttributes,
    EnrollRequest,
    Forbidden,
    KeyAndCertificate,
    KeyFormat,
    NotFound,
    Peer,
    Pending,
    ServiceFailure,
    Unauthenticated,
)
from ..trust import ID_KP_CMC_RA, ClientTrust, has_eku
from .key_delivery import PLAIN, KeyDelivery, key_delivery_for
from .keys import (
    ALL_KEY_TYPES,
    DEFAULT_KEY_TYPE,
    PrivateKey,
    generate_key,
    key_type_of,
    signature_hash,
)
from .paths import CaPaths
from .policy import IssuancePolicy, Requester
from .profile import Request, random_serial, revocation_pointers, sign_end_entity, vet_csr
from .psk_table import PskExhausted
from .signer import PinSource
from .store import (
    AlreadyRenewed,
    IssuedRecord,
    PendingRecord,
    QueueFull,
    RevocationRecord,
    SerialCollision,
    Store,
    StoreError,
    serial_hex,
)

log = logging.getLogger(__name__)

APPROVAL_MODES = ("auto", "manual")
# Defaults of `serve` too: the lifetime of an issued certificate, and the time a client
# whose request waits for an operator is told to come back after (Max-Age/Retry-After).
VALIDITY_DAYS = 365
RETRY_AFTER_SECONDS = 30
_SERIAL_ATTEMPTS = 5
_NOT_RECORDED = "could not record the certificate; nothing was issued"

# Manual approval limits what a peer can make the store hold. Over a cap the request is
# refused with 4.03/403, not 5.03/503 + Max-Age/Retry-After: the queue drains only when
# an operator decides, never by waiting, so there is no honest time to come back.
MAX_PENDING_PER_REQUESTER = 10
MAX_PENDING = 10_000
# How long a manually approved serverkeygen's private key is kept after it was first
# sent, so that a device whose answer was lost gets the same key and certificate when it
# repeats the request (CoAP retransmits within 247 s, RFC 7252 s4.8.2). Then it is erased.
KEY_RETENTION_SECONDS = 300


Answer = Certificates | Pending | KeyAndCertificate


class LocalCA:
    """The built-in CA behind the fronts. Build with LocalCA.open(ca_dir, ...)."""

    # It issues certificates: a front checks each CSR's signature before it gets here.
    front_checks_csr_signature = True
    # Hears of each certificate issued (metrics); the CLI hands it one (observe/).
    issuance_hook: IssuanceHook = NO_HOOK
    # Extensions that tell relying parties where to check revocation (publish_revocation).
    revocation_pointers: tuple[x509.ExtensionType, ...] = ()
    # The store's revocation version that _revoked holds the serials up to (revocation_of).
    _revoked_version = -1

    def __init__(
        self,
        paths: CaPaths,
        ca_certificate: x509.Certificate,
        ca_key: PrivateKey,
        store: Store,
        *,
        approval: str = "auto",
        require_pop: bool = False,
        labels: Sequence[str] = (),
        trust_clients: Sequence[x509.Certificate] = (),
        validity_days: int = VALIDITY_DAYS,
        retry_after: int = RETRY_AFTER_SECONDS,
        shared_keys: Mapping[bytes, bytes] | None = None,
        max_pending_per_requester: int = MAX_PENDING_PER_REQUESTER,
        max_pending: int = MAX_PENDING,
        key_retention: int = KEY_RETENTION_SECONDS,
        policy: IssuancePolicy | None = None,
    ) -> None:
        """shared_keys: symmetric keys shared with clients in advance, by key id, for
        server-generated keys asked with DecryptKeyIdentifier (RFC 7030 s4.4.1.1).
        max_pending_per_requester, max_pending: caps on undecided requests (manual
        approval); key_retention: seconds a delivered server-generated key is kept.
        policy: what each requester may have issued (policy.py; default: its defaults)."""
        if approval not in APPROVAL_MODES:
            raise ValueError(f"approval must be one of {', '.join(APPROVAL_MODES)}")
        if validity_days <= 0:
            raise ValueError("validity_days must be positive")
        if max_pending_per_requester <= 0 or max_pending <= 0:
            raise ValueError("the caps on pending requests must be positive")
        if key_retention < 0:
            raise ValueError("key_retention cannot be negative")
        self.max_pending_per_requester = max_pending_per_requester
        self.max_pending = max_pending
        self.key_retention = key_retention
        self.paths = paths
        self.ca_certificate = ca_certificate
        self._ca_key = ca_key
        self.store = store
        self.approval = approval
        self.require_pop = require_pop
        self.labels = tuple(labels)
        self.trust_clients = tuple(trust_clients)
        self.validity_days = validity_days
        self.retry_after = retry_after
        self._shared_keys = dict(shared_keys or {})
        self.policy = policy or IssuancePolicy()
        if self.policy.is_open:
            log.warning("%s", self.policy.describe())
        self._csrattrs_der = csr_attributes_for(ca_key, require_pop=require_pop)
        # Clients and RAs come back with the same certificate: remember chain verdicts
        # (and the fronts note the signatures they verified in the handshake there).
        self.client_trust = ClientTrust([*self.trust_clients, ca_certificate])
        self._ra_verdicts = self.client_trust.verdicts_for([ca_certificate])
        # Revoked client certificates (maker CRLs that serve's --crl adds, and this CA's
        # own records) are refused before anything else, on every operation.
        self.revocation = RevocationChecker(self.client_trust.anchors)
        self.revocation.add_records(ca_certificate, self.revocation_of)
        self._cacerts = Certificates(
            (ca_certificate,),
            raw_certificates=(ca_certificate.public_bytes(serialization.Encoding.DER),),
        )

    @classmethod
    def open(
        cls,
        ca_dir: str | Path,
        *,
        approval: str = "auto",
        require_pop: bool = False,
        labels: Sequence[str] = (),
        trust_clients: Sequence[x509.Certificate] = (),
        validity_days: int = VALIDITY_DAYS,
        retry_after: int = RETRY_AFTER_SECONDS,
        durable_commits: bool = False,
        shared_keys: Mapping[bytes, bytes] | None = None,
        max_pending_per_requester: int = MAX_PENDING_PER_REQUESTER,
        max_pending: int = MAX_PENDING,
        key_retention: int = KEY_RETENTION_SECONDS,
        policy: IssuancePolicy | None = None,
        pins: PinSource | None = None,
    ) -> LocalCA:
        """durable_commits: fsync every issued certificate's record (store.py explains).
        pins: where the PIN of a CA key in a PKCS#11 token comes from (ca/signer.py)."""
        paths = CaPaths.of(ca_dir)
        ca_cert, ca_key = paths.load_ca(pins)
        try:
            store = Store.open(paths.store_location(), durable=durable_commits)
        except StoreError as exc:
            raise ValueError(str(exc)) from exc
        return cls(
            paths,
            ca_cert,
            ca_key,  # type: ignore[arg-type]
            store,
            approval=approval,
            require_pop=require_pop,
            labels=labels,
            trust_clients=trust_clients,
            validity_days=validity_days,
            retry_after=retry_after,
            shared_keys=shared_keys,
            max_pending_per_requester=max_pending_per_requester,
            max_pending=max_pending,
            key_retention=key_retention,
            policy=policy,
        )

    @property
    def signing_key(self) -> PrivateKey:
        """The CA key (a file key, or a token key signing in its token): for the CRL and
        OCSP publishers, which must not open the token a second time."""
        return self._ca_key

    def close(self) -> None:
        self.store.close()

    def forget_delivered_keys(self) -> int:
        """Erase kept server-generated keys older than key_retention (serve calls this
        periodically; the serverkeygen path too); returns how many were erased."""
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.key_retention)
        erased = self.store.forget_keys(cutoff)
        if erased:
            log.info("erased %d delivered server-generated key(s) from the store", erased)
        return erased

    # ---- revocation (issue 14) -----------------------------------------------

    def check_key(self) -> None:
        """Sign a few bytes with the CA key and verify them with the CA certificate
        (readiness, /readyz): raises if the key cannot sign or is not the certificate's."""
        probe = b"estcoap readiness probe"
        key, public = self._ca_key, self.ca_certificate.public_key()
        algorithm = signature_hash(key)
        if isinstance(key, rsa.RSAPrivateKey):
            assert algorithm is not None and isinstance(public, rsa.RSAPublicKey)
            public.verify(
                key.sign(probe, padding.PKCS1v15(), algorithm), probe, padding.PKCS1v15(), algorithm
            )
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            assert algorithm is not None and isinstance(public, ec.EllipticCurvePublicKey)
            public.verify(key.sign(probe, ec.ECDSA(algorithm)), probe, ec.ECDSA(algorithm))
        else:  # Ed25519, Ed448: the hash is part of the algorithm
            public.verify(key.sign(probe), probe)  # type: ignore[call-arg, union-attr]

    def publish_revocation(self, *, crl_url: str | None, ocsp_url: str | None) -> None:
        """Certificates issued from now on carry a CRL distribution point and an OCSP
        responder (AIA), each when its URL is given."""
        self.revocation_pointers = revocation_pointers(crl_url, ocsp_url)

    def revocation_of(
        self, cert_or_serial: x509.Certificate | int | str
    ) -> RevocationRecord | None:
        """This CA's revocation of a certificate it issued (a serial: hex text or int),
        else None; a certificate of another issuer is never this CA's. Costs one indexed
        store read (the version, so revocations by `ca revoke` in another process count
        at once) and a set lookup; the record is read only for a revoked serial."""
        if isinstance(cert_or_serial, x509.Certificate):
            if cert_or_serial.issuer != self.ca_certificate.subject:
                return None
            serial = cert_or_serial.serial_number
        else:
            serial = int(cert_or_serial, 16) if isinstance(cert_or_serial, str) else cert_or_serial
        if self.store.revocation_version() != self._revoked_version:
            # Only what is new: revocations are never undone, and a reload of 100,000
            # serials would stall the loop for a third of a second (bench/revocation.py).
            # Set before the version: a thread reading in between only catches up again.
            if self._revoked_version < 0:
                self._revoked: set[int] = set()
            version, added = self.store.revoked_serials_after(self._revoked_version)
            self._revoked.update(added)
            self._revoked_version = version
        return self.store.revocation_of(serial) if serial in self._revoked else None

    # ---- EstService ---------------------------------------------------------

    def has_label(self, label: str | None) -> bool:
        return label is None or label in self.labels

    def set_shared_keys(self, keys: Mapping[bytes, bytes]) -> None:
        """Replace the keys shared with clients in advance (serve reloads them on SIGHUP)."""
        self._shared_keys = dict(keys)

    def client_trust_anchors(self) -> list[x509.Certificate]:
        """What the fronts verify client chains against: configured anchors plus this CA."""
        return list(self.client_trust.anchors)

    async def cacerts(self, label: str | None) -> Certificates:
        self._check_label(label)
        return self._cacerts

    async def csrattrs(self, label: str | None, peer: Peer) -> CsrAttributes:
        self._check_label(label)
        # A device is told the subject it must use (RFC 9908 template): its identity.
        try:
            subject = self.policy.template_subject(self.requester_of(peer))
        except BadRequest:  # an RA's malformed EST-Requester: enroll will say so
            subject = None
        if subject is None:
            return CsrAttributes(self._csrattrs_der)
        # A PSK channel (tinydtls) has no tls-unique to prove possession with: not asked.
        require_pop = self.require_pop and peer.psk_identity is None
        return CsrAttributes(
            csr_attributes_for(self._ca_key, require_pop=require_pop, subject=subject)
        )

    async def enroll(self, request: EnrollRequest) -> Certificates | Pending:
        return await self._call(Operation.SIMPLEENROLL, request)  # type: ignore[return-value]

    async def reenroll(self, request: EnrollRequest) -> Certificates | Pending:
        return await self._call(Operation.SIMPLEREENROLL, request)  # type: ignore[return-value]

    async def _call(self, operation: Operation, request: EnrollRequest) -> Answer:
        if self.store.durable:
            return await asyncio.to_thread(self._run, operation, request)
        return self._run(operation, request)

    async def serverkeygen(self, request: EnrollRequest) -> KeyAndCertificate | Pending:
        # Always off the loop: generating an RSA key can take a noticeable time.
        answer = await asyncio.to_thread(self._run, Operation.SERVERKEYGEN, request)
        return answer  # type: ignore[return-value]

    # ---- the request pipeline (on the loop, or in a worker thread: see _call) --

    def _run(self, operation: Operation, request: EnrollRequest) -> Answer:
        try:
            return self._process(operation, request)
        except (StoreError, sqlite3.Error) as exc:
            # A store that cannot answer is our failure, never the peer's.
            log.error("%s failed in the store: %s", operation.value, exc)
            raise ServiceFailure(f"{operation.value} failed: the CA store is unavailable") from exc

    def _process(self, operation: Operation, request: EnrollRequest) -> Answer:
        self._check_label(request.label)
        csr, peer = request.csr, request.peer
        self._refuse_revoked(peer.certificates)
        renewed_from: x509.Certificate | None = None
        # RFC 7030 s3.7: an RA authenticated the device and checked PoP on the device's
        # own channel; tls-unique does not survive the hop, so it is not checked here.
        via_ra = self.is_ra(peer)
        if operation is Operation.SIMPLEREENROLL:
            renewed_from = self._ra_renewal(csr) if via_ra else self._authorize_reenroll(peer)
        else:
            self._authorize_enroll(peer)
        if not via_ra:
            # A PSK channel has no tls-unique (tinydtls exposes none): the key itself, spent
            # with the certificate and bound to one subject, stands in (docs/psk.md).
            check_pop(csr, peer, required=self.require_pop and peer.psk_identity is None)
        # Read before anything is issued: a request that cannot be served costs nothing.
        delivery = (
            key_delivery_for(csr, peer, self._shared_keys)
            if operation is Operation.SERVERKEYGEN
            else PLAIN
        )
        if renewed_from is not None:
            check_same_identity(csr, renewed_from)
        vetted = vet_csr(csr, check_key=operation is not Operation.SERVERKEYGEN)
        self._check_policy(operation, peer, vetted, renewed=renewed_from is not None)
        if renewed_from is not None:
            successor = self.store.successor_of(serial_hex(renewed_from.serial_number))
            if successor is not None:
                return _renewed_already(renewed_from, successor, csr)

        if self.approval == "auto":
            return self._issue(operation, request, vetted, renewed_from, delivery)
        if operation is Operation.SERVERKEYGEN:
            self.forget_delivered_keys()
        record = self._submit(operation, request, via_ra)
        if record.state == "pending":
            return Pending(self.retry_after)
        if record.state == "denied":
            raise Forbidden("request denied")
        issued = self.store.issued_for_pending(record.id)
        if issued is not None:  # the device repeats after it was served: same answer
            return self._answer(issued, delivery)
        return self._issue(operation, request, vetted, renewed_from, delivery, pending_id=record.id)

    def _submit(self, operation: Operation, request: EnrollRequest, via_ra: bool) -> PendingRecord:
        """The pending record of this request, which must be the caller's own."""
        peer, csr = request.peer, request.csr
        identity = requester_id(peer)
        try:
            record = self.store.submit_pending(
                operation=operation,
                label=request.label,
                csr_der=csr.der,
                csr_sha256=csr.sha256,
                subject=csr.subject.rfc4514_string(),
                requester=peer.describe(),
                requester_id=identity,
                # An RA forwards the requests of many devices: only the total cap holds.
                max_per_requester=None if via_ra else self.max_pending_per_requester,
                max_total=self.max_pending,
            )
        except QueueFull as exc:
            log.info("%s from %s not queued: %s", operation.value, peer.describe(), exc)
            raise Forbidden(f"not queued: {exc}; an operator must decide those first") from exc
        made_by_peer = (
            record.requester_id == identity
            if record.requester_id is not None  # a record from schema version 1
            else record.requester == peer.describe()
        )
        if not made_by_peer:
            # A CSR replayed by another identity: its answer (a certificate, or for
            # serverkeygen a private key) belongs to whoever made the request. Neither
            # the request's state nor its owner is told.
            raise Forbidden("this CSR is bound to another requester's request; make your own CSR")
        return record

    def _check_policy(
        self, operation: Operation, peer: Peer, vetted: Request, *, renewed: bool
    ) -> None:
        """The issuance policy, before anything is queued or issued. A renewal keeps the
        names of the certificate it renews (checked above): only the limits apply."""
        self.policy.check(
            None if renewed else self.requester_of(peer),
            vetted.subject,
            vetted.san,
            serverkeygen=operation is Operation.SERVERKEYGEN,
            ca_subject=self.ca_certificate.subject,
            limits_only=renewed,
        )

    def requester_of(self, peer: Peer) -> Requester | None:
        """Who asks, as the policy sees it: an RA (or the device it vouches for in
        EST-Requester), a device by its certificate, a password user; None for a peer
        with no identity (a certificate that names neither serialNumber nor CN)."""
        if self.is_ra(peer):
            if peer.forwarded_identity is not None:
                try:
                    identity = parse_requester(peer.forwarded_identity)
                except NameSyntaxError as exc:
                    raise BadRequest(str(exc)) from exc
                return Requester.device(identity, source="the device the RA vouches for")
            assert peer.certificate is not None
            return Requester("ra", _common_name(peer.certificate) or peer.describe())
        cert = peer.certificate
        if cert is not None and self.client_trust.trusted(peer.certificates):
            named = device_identity(cert)
            if named is None:
                return None
            mine = cert.issuer == self.ca_certificate.subject
            source = "your certificate" if mine else "your IDevID"
            return Requester.device(named, source=source, subject=cert.subject)
        if peer.http_user is not None:
            return Requester("user", peer.http_user)
        if peer.psk_identity is not None:
            return self._psk_requester(peer.psk_identity)
        return None

    def _psk_requester(self, identity: str) -> Requester:
        """The PSK device, bound to the subject its key was added for; refused when the key
        has no use left, expired or was removed since the handshake."""
        record = self.store.psk_get(identity)
        if record is None or not record.usable():
            why = "was removed" if record is None else f"is {record.state()}"
            raise Forbidden(f"PSK identity {identity!r} {why}: enroll with a new key")
        try:
            return Requester.psk(identity, parse_name(record.subject))
        except NameSyntaxError as exc:  # the store holds what psk add checked
            raise ServiceFailure(f"PSK identity {identity!r}: unusable subject") from exc

    def _check_label(self, label: str | None) -> None:
        if not self.has_label(label):
            raise NotFound(f"unknown CA label {label!r}")

    def _authorize_enroll(self, peer: Peer) -> None:
        if peer.psk_identity is not None and not peer.certificates:
            self._psk_requester(peer.psk_identity)  # refuses a spent or expired key
            return
        if peer.certificates:
            if self.client_trust.trusted(peer.certificates):
                return
            if peer.http_user is None:
                raise Unauthenticated("client certificate does not chain to a trusted anchor")
        if peer.http_user is not None:
            return
        raise Unauthenticated("enrollment needs a client certificate or an authenticated user")

    def is_ra(self, peer: Peer) -> bool:
        """A Registration Authority: a certificate with the id-kp-cmcRA EKU that this CA
        issued (`ca issue-ra`). Device makers' CAs (trust_clients) are trusted to vouch
        for devices, not to appoint RAs that skip PoP and vouch for other devices."""
        cert = peer.certificate
        return (
            cert is not None
            and has_eku(cert, ID_KP_CMC_RA)
            and self._ra_verdicts.trusted(peer.certificates)
        )

    def _ra_renewal(self, csr: Csr) -> x509.Certificate:
        """Re-enrollment forwarded by an RA: the RA checked the device's certificate; we
        still require that this CA issued a certificate to the CSR's subject before."""
        record = self.store.latest_issued_to(csr.subject.rfc4514_string())
        if record is None:
            raise Forbidden(
                "re-enrollment via RA: this CA never issued a certificate to "
                f"{csr.subject.rfc4514_string()!r}"
            )
        # The RA saw the device's certificate, we did not: its newest one must stand.
        self._refuse_revoked((record.certificate,))
        return record.certificate

    def _refuse_revoked(self, chain: Sequence[x509.Certificate]) -> None:
        """4.03/403 for a chain with a revoked certificate, or whose issuer's CRL is
        unusable (stale, badly signed: revocation.py fails closed), saying which and why."""
        if chain and (why := self.revocation.refusal(chain)) is not None:
            log.info("refused: %s", why)
            raise Forbidden(why)

    def _authorize_reenroll(self, peer: Peer) -> x509.Certificate:
        cert = peer.certificate
        if cert is None:
            raise Unauthenticated("re-enrollment needs the client certificate being renewed")
        if not self.client_trust.issued_by(cert, self.ca_certificate):
            raise Forbidden("re-enrollment needs a certificate issued by this CA")
        if self.store.find_issued(cert.serial_number) is None:
            raise Forbidden("re-enrollment certificate is not in this CA's records")
        return cert

    def _issue(
        self,
        operation: Operation,
        request: EnrollRequest,
        vetted: Request,
        renewed_from: x509.Certificate | None,
        delivery: KeyDelivery,
        *,
        pending_id: int | None = None,
    ) -> Answer:
        key: PrivateKey | None = None
        if operation is Operation.SERVERKEYGEN:
            key = generate_key(_keygen_type(request.csr))
            vetted = Request(vetted.subject, key.public_key(), vetted.san)
        key_der = _pkcs8(key) if key is not None else None
        # Sealed before anything is issued: a key that cannot be sealed costs no certificate.
        key_answer = self._sealed(key_der, delivery) if key_der is not None else None
        kind, parent = "new", None
        if renewed_from is not None:
            parent = serial_hex(renewed_from.serial_number)
            kind = "renew" if _same_key(renewed_from, request.csr) else "rekey"
        for _ in range(_SERIAL_ATTEMPTS):
            cert = sign_end_entity(
                vetted,
                ca_cert=self.ca_certificate,
                ca_key=self._ca_key,
                serial=random_serial(),
                validity_days=self.validity_days,
                extensions=self.revocation_pointers,
            )
            try:
                record = self.store.record_issued(
                    cert,
                    requester=request.peer.describe(),
                    operation=operation,
                    label=request.label,
                    csr_sha256=request.csr.sha256,
                    kind=kind,
                    renewed_from=parent,
                    pending_id=pending_id,
                    # Kept only so a repeated approved request gets the same key back.
                    key_der=key_der if pending_id is not None else None,
                    # A PSK's use is spent with the certificate it pays for, atomically.
                    psk_identity=request.peer.psk_identity,
                )
            except SerialCollision:
                continue
            except PskExhausted as exc:  # spent by a request racing this one
                raise Forbidden(str(exc)) from exc
            except AlreadyRenewed as exc:  # renewed by a request racing this one
                assert renewed_from is not None
                return _renewed_already(renewed_from, exc.successor, request.csr)
            except (StoreError, sqlite3.Error) as exc:
                if pending_id is not None:
                    # Another instance may have served this approval a moment ago.
                    issued = self.store.issued_for_pending(pending_id)
                    if issued is not None:
                        return self._answer(issued, delivery)
                log.error("could not record certificate: %s", exc)
                raise ServiceFailure(_NOT_RECORDED) from exc
            except Exception as exc:
                log.exception("recording an issued certificate failed")
                raise ServiceFailure(_NOT_RECORDED) from exc
            log.info(
                "issued %s serial %s to %s (%s)",
                operation.value,
                record.serial,
                record.requester,
                kind,
            )
            self.issuance_hook.issued(
                "serverkeygen" if operation is Operation.SERVERKEYGEN else kind
            )
            chain = self._chain(cert, record.cert_der)
            if key_answer is not None:
                if pending_id is not None and self.key_retention == 0:
                    self.forget_delivered_keys()  # this answer is the only one
                return KeyAndCertificate(*key_answer, chain)
            return chain
        raise ServiceFailure("could not find a free serial number")

    def _answer(self, issued: IssuedRecord, delivery: KeyDelivery) -> Answer:
        chain = self._chain(issued.certificate, issued.cert_der)
        if issued.est_operation is Operation.SERVERKEYGEN:
            if issued.key_der is None:
                raise Forbidden(
                    "the server-generated key of this request was delivered and is no "
                    f"longer kept (at most {self.key_retention} s); send a new CSR"
                )
            return KeyAndCertificate(*self._sealed(issued.key_der, delivery), chain)
        return chain

    def _sealed(self, key_der: bytes, delivery: KeyDelivery) -> tuple[bytes, KeyFormat]:
        """The key as the client asked for it; this CA generated it, so it signs the
        package (RFC 7030 s4.4.2)."""
        try:
            return delivery.deliver(key_der, self.ca_certificate, self._ca_key)
        except CodecError as exc:
            raise BadRequest(f"cannot seal the generated key for the named key: {exc}") from exc

    @staticmethod
    def _chain(cert: x509.Certificate, cert_der: bytes) -> Certificates:
        # RFC 7030 s4.2.3: the certs-only response holds only the issued certificate;
        # the client has the CA certificates from /cacerts.
        return Certificates((cert,), raw_certificates=(cert_der,))


def csr_attributes_for(
    ca_key: PrivateKey, *, require_pop: bool, subject: x509.Name | None = None
) -> bytes:
    """What this CA asks of CSRs: PoP when required, a key like its own, a matching hash,
    and given one, the subject to use (an RFC 9908 CertificationRequestInfoTemplate)."""
    key_request: KeyRequest | None = None
    if isinstance(ca_key, ec.EllipticCurvePrivateKey):
        key_request = KeyRequest.ec(ca_key.curve)
    elif isinstance(ca_key, rsa.RSAPrivateKey):
        key_request = KeyRequest.rsa(ca_key.key_size)
    return build_csrattrs(
        challenge_password=require_pop,
        key=key_request,
        signature_hash=signature_hash(ca_key) if key_request is not None else None,
        template=CsrTemplate.build(subject=subject) if subject is not None else None,
    )


def _common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def requester_id(peer: Peer) -> str:
    """Who may see a pending request's answer. The client certificate itself (its
    SHA-256), not its subject, which two trusted device makers may both have issued;
    and the HTTP user, when there is one."""
    parts = []
    if peer.certificate is not None:
        parts.append(f"cert-sha256:{peer.certificate.fingerprint(hashes.SHA256()).hex()}")
    if peer.http_user is not None:
        parts.append(f"user:{peer.http_user}")
    if peer.psk_identity is not None:
        parts.append(f"psk:{peer.psk_identity}")
    return " ".join(parts) or peer.describe()


def _renewed_already(renewed: x509.Certificate, successor: IssuedRecord, csr: Csr) -> Certificates:
    """The renewal rule (RFC 7030 leaves it to the CA): only the newest certificate of a
    renewal chain may re-enroll, so a stolen or cloned older one cannot fork the chain.
    The request that made the successor, repeated because its answer was lost, gets that
    successor again; any other request is refused and told which certificate to use.
    A repeat is the same CSR or one for the successor's key: a client that retries
    re-signs its CSR (ECDSA signatures differ each time) but keeps its key, and whoever
    holds that key may have the certificate for it again."""
    successor_cert = successor.certificate
    if successor.csr_sha256 == csr.sha256 or _same_key(successor_cert, csr):
        return LocalCA._chain(successor_cert, successor.cert_der)
    raise Forbidden(
        f"certificate {serial_hex(renewed.serial_number)} was already renewed by serial "
        f"{successor.serial}; re-enroll with that certificate"
    )


def _same_key(cert: x509.Certificate, csr: Csr) -> bool:
    return spki.public_key_der(cert) == csr.public_key_der


def _keygen_type(csr: Csr) -> str:
    """The key type to generate: the CSR key's own type where acceptable, else the default."""
    name = key_type_of(csr.public_key)
    if name is None or name not in ALL_KEY_TYPES:
        return DEFAULT_KEY_TYPE
    return name


def _pkcs8(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
