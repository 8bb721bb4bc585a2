"""The process-level runtime of a long-running command (serve, gateway, proxy): its signals.

* SIGTERM, SIGINT: stop. Every front stops accepting (listening TCP sockets closed, no new
  DTLS handshake), the exchanges in flight finish (at most `drain_timeout` seconds), then
  each front closes: DTLS sessions get a close_notify, HTTPS connections are closed once
  their request is answered. The command then exits 0. A device cut off at the deadline
  sees its session or connection closed, a failure it can retry elsewhere or later. A
  second SIGTERM or SIGINT during the drain ends it at once.
* SIGHUP: reload. Each item (trust anchors, CRLs, users, shared keys, the issuance policy)
  is read afresh and replaces the old one only when all of it could be read; a failure
  keeps the old settings and says why (ERROR). Each item that changed gets one INFO line,
  "reload: trust anchors 2 -> 3 certificates". Established sessions are not touched: a
  DTLS association keeps the OpenSSL context it was made with.

One Runtime per process; the commands register their fronts and reloadable items with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509

log = logging.getLogger("estcoap.runtime")

DEFAULT_DRAIN_TIMEOUT = 10.0
_POLL = 0.05  # seconds between looks at the exchanges in flight while draining
# Nothing in flight for this long ends the drain: a device's next request on its session
# (enroll after cacerts, the next Block1 block) comes within a round trip, not later.
_QUIET = 0.25


class Front(Protocol):
    """What the runtime asks of a running front."""

    def stop_accepting(self) -> None: ...

    def in_flight(self) -> int: ...

    async def close(self, timeout: float) -> None: ...


# A reloadable item: reads its files afresh and applies them, returns what changed
# ("2 -> 3 certificates") or None when nothing did; raises (ValueError, OSError ...) to
# keep the old settings.
Reload = Callable[[], str | None]


@dataclass
class _Item:
    name: str
    reload: Reload


class Runtime:
    def __init__(self, command: str, drain_timeout: float = DEFAULT_DRAIN_TIMEOUT) -> None:
        self.command = command
        self.drain_timeout = drain_timeout
        self.fronts: list[Front] = []
        self._items: list[_Item] = []
        self._after: list[Callable[[], Any]] = []
        self._stop = asyncio.Event()
        self._hurry = False  # a second SIGTERM/SIGINT: stop waiting for what is in flight
        self.reloads = 0

    def install(self) -> None:
        """Take SIGTERM, SIGINT and SIGHUP in the running loop."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)

    def add_front(self, front: Front) -> None:
        self.fronts.append(front)

    def reloadable(self, name: str, reload: Reload) -> None:
        self._items.append(_Item(name, reload))

    def stop(self) -> None:
        if self._stop.is_set():
            self._hurry = True
        self._stop.set()

    async def wait(self) -> None:
        await self._stop.wait()

    def reload(self) -> list[str]:
        """Reload every item; returns the log lines (INFO for changes, ERROR for failures)."""
        self.reloads += 1
        said = []
        for item in self._items:
            try:
                change = item.reload()
            except Exception as exc:  # any failure: the item keeps its old settings
                line = f"reload: {item.name} not reloaded, the old ones stay: {_one_line(exc)}"
                log.error("%s", line)
                said.append(line)
                continue
            if change is not None:
                line = f"reload: {item.name} {change}"
                log.info("%s", line)
                said.append(line)
        if not said:
            log.info("reload: nothing changed")
        return said

    def after_fronts(self, close: Callable[[], Any]) -> None:
        """close() (a coroutine function or a function) runs once every front is closed:
        what the fronts need until their last answer (an upstream pool, a CRL listener)."""
        self._after.append(close)

    async def drain(self) -> None:
        """Stop accepting, let what is in flight finish (bounded), close every front."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout
        for front in self.fronts:
            front.stop_accepting()
        log.info(
            "stopping: no new connections or handshakes; requests in flight have %g s",
            self.drain_timeout,
        )
        quiet_since: float | None = None
        while loop.time() < deadline and not self._hurry:
            if any(front.in_flight() for front in self.fronts):
                quiet_since = None
            elif quiet_since is None:
                quiet_since = loop.time()
            elif loop.time() - quiet_since >= _QUIET:
                break
            await asyncio.sleep(_POLL)
        left = sum(front.in_flight() for front in self.fronts)
        if left:
            log.warning(
                "stopping: %d exchanges still in flight after %.1f s are cut off",
                left,
                self.drain_timeout,
            )
        await self.close(max(0.0, deadline - loop.time()))

    async def close(self, timeout: float = 0.0) -> None:
        """Close the fronts (each given what is left of timeout), then the rest."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for front in self.fronts:
            await front.close(max(0.0, deadline - loop.time()))
        self.fronts.clear()
        for close in reversed(self._after):
            result = close()
            if asyncio.iscoroutine(result):
                with contextlib.suppress(asyncio.CancelledError):
                    await result
        self._after.clear()


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


# ---- fronts -----------------------------------------------------------------------


class CoapsFront:
    """A CoapsServer (estcoap.coap.server): requests in flight are the site's renderings."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self._rendering = 0
        site = server.context.serversite
        render = site.render_to_pipe

        async def counted(pipe: Any) -> Any:
            self._rendering += 1
            try:
                return await render(pipe)
            finally:
                self._rendering -= 1

        site.render_to_pipe = counted  # the context calls serversite.render_to_pipe(pipe)

    def stop_accepting(self) -> None:
        self.server.transport.stop_accepting()

    def in_flight(self) -> int:
        """Requests being answered, and handshakes started before the stop (their request
        follows)."""
        return self._rendering + self.server.transport.handshakes_in_progress

    async def close(self, timeout: float) -> None:
        await self.server.close()  # every session gets a close_notify

    def set_trust_anchors(self, anchors: Sequence[x509.Certificate]) -> None:
        self.server.transport.set_trust_anchors(anchors)


class HttpsFront:
    """An HttpsServer (estcoap.https.server): aiohttp answers the requests in progress
    before it closes a connection (its graceful shutdown), bounded by the drain's rest."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def stop_accepting(self) -> None:
        for site in list(self.server.runner.sites):
            listening = getattr(site, "_server", None)
            if listening is not None:
                listening.close()  # the listening socket; connections go on

    def in_flight(self) -> int:
        return 0  # aiohttp waits for them in close()

    async def close(self, timeout: float) -> None:
        # aiohttp's runner waits up to its shutdown timeout (60 s) for handlers: the drain's
        # bound instead.
        self.server.runner._shutdown_timeout = timeout
        await self.server.close()

    def set_trust_anchors(self, anchors: Sequence[x509.Certificate]) -> None:
        """New TLS handshakes accept client certificates of these too. OpenSSL cannot take an
        anchor out of a context, so one removed is still accepted by TLS; the service's
        own check (client_trust) refuses its certificates."""
        from cryptography.hazmat.primitives.serialization import Encoding

        for site in self.server.runner.sites:
            context = getattr(site, "_ssl_context", None)
            if context is not None and anchors:
                context.load_verify_locations(
                    cadata="".join(a.public_bytes(Encoding.PEM).decode() for a in anchors)
                )

    @property
    def authenticator(self) -> Any:
        front = getattr(self.server, "front", None)
        return getattr(front, "auth", None)


def front_for(started: Any) -> Front | None:
    """The Front of something a command started, or None when it serves no requests."""
    from .coap.server import CoapsServer
    from .https.server import HttpsServer

    if isinstance(started, CoapsServer):
        return CoapsFront(started)
    if isinstance(started, HttpsServer):
        return HttpsFront(started)
    return None


# ---- reloadable items -------------------------------------------------------------


def read_certificates(paths: Sequence[str]) -> list[x509.Certificate]:
    """PEM certificates from files; ValueError names a file that holds none."""
    found: list[x509.Certificate] = []
    for path in paths:
        with open(path, "rb") as fh:
            data = fh.read()
        try:
            found.extend(x509.load_pem_x509_certificates(data))
        except ValueError:
            raise ValueError(f"{path}: not a PEM certificate file") from None
    return found


def trust_anchors(
    paths: Sequence[str],
    service: Any,
    fronts: Sequence[Front],
    also: Callable[[], Sequence[x509.Certificate]],
) -> Reload:
    """--trust-clients: service.trust_clients and the anchors its fronts verify new
    handshakes with (the files' certificates plus also(), e.g. the CA itself)."""

    def reload() -> str | None:
        new = read_certificates(paths)
        old = list(service.trust_clients)
        if _ders(new) == _ders(old):
            return None
        anchors = [*new, *also()]
        service.trust_clients = type(service.trust_clients)(new)
        service.client_trust.set_anchors(anchors)
        revocation = getattr(service, "revocation", None)
        if revocation is not None:  # CRLs are verified against the anchors
            revocation.anchors = tuple(anchors)
            revocation.refresh(force=True)
        for front in fronts:
            setter = getattr(front, "set_trust_anchors", None)
            if setter is not None:
                setter(anchors)
        return f"{len(old)} -> {len(new)} certificates"

    return reload


def _ders(certs: Sequence[x509.Certificate]) -> list[bytes]:
    from cryptography.hazmat.primitives.serialization import Encoding

    return sorted(c.public_bytes(Encoding.DER) for c in certs)


def crls(checker: Callable[[], Any]) -> Reload:
    """--crl files, read again even when they look unchanged. A CRL that fails is refused
    as docs/revocation.md says (its issuer's devices are refused until it is fixed)."""

    def reload() -> str | None:
        revocation = checker()
        if revocation is None or not revocation.crl_files:
            return None
        before = [_crl_state(f) for f in revocation.crl_files]
        revocation.refresh(force=True)
        changes = [
            f"{f.path}: {_crl_state(f)}"
            for f, was in zip(revocation.crl_files, before, strict=True)
            if _crl_state(f) != was
        ]
        return "; ".join(changes) or None

    return reload


def _crl_state(crl_file: Any) -> str:
    if crl_file.crl is None:
        return f"refused ({crl_file.error})"
    return f"number {crl_file.crl.number}, {len(crl_file.crl.revoked)} revoked"


def users(load: Callable[[], Sequence[Any]], authenticators: Callable[[], Sequence[Any]]) -> Reload:
    """The HTTP users (--users-file, with --user and ESTCOAP_USERS as at start)."""

    def reload() -> str | None:
        targets = [a for a in authenticators() if a is not None]
        if not targets:
            return None
        new = list(load())
        old = list(targets[0].users)
        if new == old:
            return None
        for authenticator in targets:
            authenticator.set_users(new)
        added = sorted({u.name for u in new} - {u.name for u in old})
        removed = sorted({u.name for u in old} - {u.name for u in new})
        detail = ", ".join([*(f"+{n}" for n in added), *(f"-{n}" for n in removed)])
        return f"{len(old)} -> {len(new)}" + (f" ({detail})" if detail else " (changed)")

    return reload


def from_file(path: str, load: Callable[[str], Any], apply: Callable[[Any], None]) -> Reload:
    """A setting read from one file (shared keys, the issuance policy): applied again when
    the file's content changed since it was last read."""
    last = [_digest(path)]

    def reload() -> str | None:
        digest = _digest(path)
        if digest == last[0]:
            return None
        apply(load(path))  # raises for a broken file: the old setting stays
        last[0] = digest
        return f"{path} read again"

    return reload


def _digest(path: str) -> bytes | None:
    import hashlib

    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).digest()
    except OSError:
        return None
