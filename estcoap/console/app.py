"""The console's pages and actions (aiohttp): sign-in, pending requests, certificates, fleet.

Every page but the sign-in form and the stylesheet needs a live session: a GET without
one is sent to /login, a POST is refused 403. Every POST carries the session's CSRF
token (the sign-in form a token of its own, in a cookie beside it), checked before the
action; SameSite=Strict cookies are a second fence, not the only one. Actions go to the
store with the console user as who decided (console:NAME), so the audit trail names them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import logging
import secrets
import string
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from ..ca.paths import ExposedFileError, require_private
from ..ca.store import (
    END_ENTITY_REASONS,
    AlreadyRevoked,
    IssuedRecord,
    RevocationRecord,
    Store,
    StoreError,
    UnknownCertificate,
)
from ..codec.names import format_name, parse_name
from ..throttle import AuthLimits, FailureLimit, retry_after, source_key, user_key
from . import fleet as fleet_view
from . import users as console_users
from .sessions import Session, Sessions
from .tally import OUTCOMES, RequestTally

log = logging.getLogger("estcoap.console")

MAX_FORM = 16 * 1024  # a sign-in or an action form is a few hundred bytes
MAX_PASSWORD_CHECKS = 4  # scrypt runs in threads at once; more wait for a 503
SEARCH_LIMIT = 100
REASONS = tuple(reason.value for reason in END_ENTITY_REASONS)
PAGES = (("/pending", "Pending"), ("/certificates", "Certificates"), ("/fleet", "Fleet"))
OPEN_PATHS = ("/login", "/static/console.css")
# aiohttp >= 3.12 wants typed keys for request storage; older ones take the string.
SESSION: Any = web.RequestKey("session", Session) if hasattr(web, "RequestKey") else "session"

SECURITY_HEADERS = {
    # Nothing but this origin's stylesheet: no script at all, no frames, forms post here.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass
class ConsoleConfig:
    users_file: Path
    secure: bool  # served over HTTPS: the cookie is Secure and __Host- prefixed
    sessions: Sessions
    limits: AuthLimits = AuthLimits()

    @property
    def cookie(self) -> str:
        return "__Host-estcoap-console" if self.secure else "estcoap-console"

    @property
    def login_cookie(self) -> str:
        return "__Host-estcoap-login" if self.secure else "estcoap-login"


def _template(name: str) -> string.Template:
    text = resources.files(__package__).joinpath("templates", name).read_text()
    return string.Template(text)


class Console:
    """The state behind the pages: the store, users, sessions, limits and live figures."""

    def __init__(
        self,
        store: Store,
        config: ConsoleConfig,
        *,
        tally: RequestTally | None = None,
        dtls_sessions: Callable[[], int] | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.sessions = config.sessions
        self.tally = tally
        self.dtls_sessions = dtls_sessions
        self.by_source = FailureLimit(
            "source",
            burst=config.limits.source_burst,
            refill_per_second=config.limits.source_per_second,
        )
        self.by_user = FailureLimit(
            "user",
            burst=config.limits.user_burst,
            refill_per_second=config.limits.user_per_second,
        )
        self._checks = 0
        self._users: dict[str, console_users.ConsoleUser] = {}
        self._users_stamp: tuple[float, int] | None = None
        self._layout = _template("layout.html")
        self._login = _template("login.html")
        self._css = resources.files(__package__).joinpath("static", "console.css").read_bytes()

    # ---- users ---------------------------------------------------------------------

    def users(self) -> dict[str, console_users.ConsoleUser]:
        """The users file as it is now (re-read when it changed: `console user add/remove`
        takes effect without a restart). A file others may read counts as no users."""
        path = self.config.users_file
        try:
            st = path.stat()
        except FileNotFoundError:
            self._users, self._users_stamp = {}, None
            return self._users
        stamp = (st.st_mtime, st.st_size)
        if stamp != self._users_stamp:
            try:
                require_private(path)
                self._users = console_users.load(path)
            except (ExposedFileError, console_users.ConsoleUsersError) as exc:
                log.error("console: %s; nobody can sign in until it is fixed", exc)
                self._users = {}
            self._users_stamp = stamp
        return self._users

    # ---- the application -----------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_FORM, middlewares=[self._guard])
        app.add_routes(
            [
                web.get("/login", self.login_form),
                web.post("/login", self.login),
                web.post("/logout", self.logout),
                web.get("/static/console.css", self.stylesheet),
                web.get("/", self.home),
                web.get("/pending", self.pending_page),
                web.post(r"/pending/{id:\d+}/{decision:approve|deny}", self.decide),
                web.get("/certificates", self.certificates_page),
                web.get(r"/certificates/{serial:[0-9a-fA-F]+}", self.certificate_page),
                web.post(r"/certificates/{serial:[0-9a-fA-F]+}/revoke", self.revoke),
                web.get("/fleet", self.fleet_page),
            ]
        )
        return app

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            if request.path in OPEN_PATHS:
                response = await handler(request)
            else:
                response = await self._with_session(request, handler)
        except web.HTTPException as exc:
            self._harden(exc.headers)
            raise
        self._harden(response.headers)
        return response

    def _harden(self, headers: Any) -> None:
        for name, value in SECURITY_HEADERS.items():
            headers.setdefault(name, value)
        if self.config.secure:
            headers.setdefault("Strict-Transport-Security", "max-age=31536000")

    async def _with_session(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        session = self.sessions.get(request.cookies.get(self.config.cookie))
        if session is not None and session.user not in self.users():
            self.sessions.end_user(session.user)  # removed from the file: signed out
            session = None
        if session is None:
            if request.method == "GET":
                raise web.HTTPSeeOther("/login")
            raise web.HTTPForbidden(text="no session: sign in first\n")
        if request.method == "POST":
            form = await request.post()
            token = form.get("csrf")
            if not session.csrf_ok(token if isinstance(token, str) else None):
                log.warning(
                    "console: %s posted to %s without a valid CSRF token",
                    session.user,
                    request.path,
                )
                raise web.HTTPForbidden(text="missing or wrong CSRF token\n")
        request[SESSION] = session
        return await handler(request)

    # ---- sign-in -------------------------------------------------------------------

    async def login_form(self, request: web.Request, message: str = "", status: int = 200):
        # The browser's token stays while its cookie does: a request the browser makes on
        # its own (favicon.ico, sent here without a session) must not void the open form's.
        token = request.cookies.get(self.config.login_cookie) or ""
        if len(token) != 43:
            token = secrets.token_urlsafe(32)
        body = self._login.substitute(
            csrf=escape(token), message=_flash(message, error=True) if message else ""
        )
        response = web.Response(text=body, content_type="text/html", status=status)
        self._set_cookie(response, self.config.login_cookie, token, max_age=3600)
        return response

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        sent, expected = form.get("csrf"), request.cookies.get(self.config.login_cookie)
        if not (isinstance(sent, str) and expected and hmac.compare_digest(sent, expected)):
            raise web.HTTPForbidden(text="missing or wrong CSRF token: reload the sign-in page\n")
        name, password = str(form.get("user", "")), str(form.get("password", ""))
        source, user = source_key(request.remote), user_key(name)
        wait = max(self.by_source.wait(source), self.by_user.wait(user))
        if wait > 0:
            self.by_source.refuse()
            return web.Response(
                status=429,
                headers={"Retry-After": str(retry_after(wait))},
                text=f"too many failed sign-ins; try again in {retry_after(wait)} s\n",
            )
        if self._checks >= MAX_PASSWORD_CHECKS:
            return web.Response(
                status=503,
                headers={"Retry-After": "1"},
                text="busy checking passwords; try again\n",
            )
        self.by_source.take(source)
        self.by_user.take(user)
        account = self.users().get(name)
        self._checks += 1
        try:
            ok = await asyncio.to_thread(console_users.check, account, password)
        finally:
            self._checks -= 1
        if not ok:
            self.by_source.failed(source)
            self.by_user.failed(user)
            log.warning("console: failed sign-in as %s from %s", user, source)
            return await self.login_form(request, "Wrong user name or password.", status=401)
        self.by_source.give_back(source)
        self.by_user.give_back(user)
        session = self.sessions.create(name)
        log.info("console: %s signed in from %s", name, source)
        response = _redirect("/pending")
        self._set_cookie(response, self.config.cookie, session.id)
        self._set_cookie(response, self.config.login_cookie, "", max_age=0)
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        session: Session = request[SESSION]
        self.sessions.end(session.id)
        response = _redirect("/login")
        self._set_cookie(response, self.config.cookie, "", max_age=0)
        return response

    def _set_cookie(
        self, response: web.StreamResponse, name: str, value: str, max_age: int | None = None
    ) -> None:
        response.set_cookie(
            name,
            value,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=self.config.secure,
            max_age=max_age,
        )

    async def stylesheet(self, request: web.Request) -> web.Response:
        return web.Response(body=self._css, content_type="text/css")

    async def home(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther("/pending")

    # ---- pending requests ----------------------------------------------------------

    async def pending_page(self, request: web.Request) -> web.Response:
        session: Session = request[SESSION]
        now = dt.datetime.now(dt.UTC)
        rows = []
        # Store reads run in a thread: a database server's answer (or its absence) must not
        # hold up the event loop the devices are served on.
        for record in await asyncio.to_thread(self.store.pending_list, "pending"):
            sans, key = _csr_summary(record.csr_der)
            age = _age(now - dt.datetime.fromisoformat(record.created))
            buttons = "".join(
                _action_form(
                    f"/pending/{record.id}/{verb}",
                    session,
                    verb.capitalize(),
                    css=verb,
                    id_=f"{verb}-{record.id}",
                )
                for verb in ("approve", "deny")
            )
            rows.append(
                _row(
                    str(record.id),
                    _name(record.subject),
                    escape(sans),
                    escape(key),
                    _name(record.requester),
                    escape(record.label or "-"),
                    escape(record.operation),
                    age,
                    buttons,
                )
            )
        table = _table(
            ("id", "subject", "SANs", "key", "requester", "label", "operation", "age", ""),
            rows,
            empty="No request waits for a decision.",
        )
        body = (
            f'<p class="note">A device polling for its request gets the answer at its next '
            f"poll.</p>{table}"
        )
        return self._page(request, "Pending requests", body)

    async def decide(self, request: web.Request) -> web.StreamResponse:
        session: Session = request[SESSION]
        request_id, decision = int(request.match_info["id"]), request.match_info["decision"]
        decide = self.store.approve if decision == "approve" else self.store.deny
        try:
            record = await asyncio.to_thread(
                decide, request_id, decided_by=f"console:{session.user}"
            )
        except StoreError as exc:
            session.flash = f"!{exc}"
        else:
            session.flash = f"Request {record.id} ({record.subject}) {record.state}."
            log.info(
                "console: %s %s request %d (%s)",
                session.user,
                record.state,
                record.id,
                record.subject,
            )
        raise web.HTTPSeeOther("/pending")

    # ---- certificates --------------------------------------------------------------

    async def certificates_page(self, request: web.Request) -> web.Response:
        query = request.query.get("q", "").strip()[:200]
        # An empty search matches every certificate: the newest SEARCH_LIMIT, by index.
        records, revoked = await asyncio.to_thread(self._search, query)
        rows = [
            _row(
                f'<a class="mono" href="/certificates/{r.serial}">{r.serial}</a>',
                _name(r.subject),
                _name(r.requester),
                escape(r.operation),
                escape(r.created),
                escape(r.not_after),
                _status(r, r.serial in revoked),
            )
            for r in records
        ]
        form = (
            '<form method="get" action="/certificates" class="search">'
            f'<input name="q" id="q" value="{escape(query)}" size="40" '
            'placeholder="subject, serial or requester"> <button type="submit">Search</button>'
            "</form>"
        )
        what = f"matching {escape(query)!s}" if query else "newest first"
        table = _table(
            ("serial", "subject", "requester", "operation", "issued", "not after", "status"),
            rows,
            empty="No certificate found.",
        )
        body = (
            f'{form}<p class="note">{len(records)} certificates {what} (at most '
            f"{SEARCH_LIMIT}).</p>{table}"
        )
        return self._page(request, "Certificates", body)

    def _search(self, query: str) -> tuple[list[IssuedRecord], set[str]]:
        records = self.store.issued_search(query, SEARCH_LIMIT)
        return records, {r.serial for r in records if self.store.revocation_of(r.serial)}

    def _certificate(
        self, serial: str
    ) -> tuple[IssuedRecord, RevocationRecord | None, list[IssuedRecord], set[str]] | None:
        """A certificate, its revocation, its renewal chain and which of those are revoked."""
        record = self.store.find_issued(serial)
        if record is None:
            return None
        chain = self._renewals(record)
        revoked = {r.serial for r in chain if self.store.revocation_of(r.serial)}
        return record, self.store.revocation_of(record.serial), chain, revoked

    async def certificate_page(self, request: web.Request) -> web.Response:
        session: Session = request[SESSION]
        found = await asyncio.to_thread(self._certificate, request.match_info["serial"])
        if found is None:
            raise web.HTTPNotFound(text="no such certificate\n")
        record, revocation, chain, revoked = found
        facts = [
            ("serial", f'<span class="mono">{record.serial}</span>'),
            ("subject", _name(record.subject)),
            ("SANs", escape(record.san or "-")),
            ("requester", _name(record.requester)),
            ("operation", f"{escape(record.operation)} ({escape(record.kind)})"),
            ("label", escape(record.label or "-")),
            ("valid", f"{escape(record.not_before)} to {escape(record.not_after)}"),
            ("status", _status(record, revocation is not None)),
        ]
        if revocation is not None:
            facts.append(
                (
                    "revoked",
                    f"{escape(revocation.revoked_at)}: "
                    f"{escape(revocation.reason)} by {escape(revocation.revoked_by)}",
                )
            )
        details = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
        chain_rows = [
            _row(
                f'<a class="mono" href="/certificates/{r.serial}">{r.serial}</a>'
                + (" (this one)" if r.serial == record.serial else ""),
                escape(r.kind),
                escape(r.created),
                escape(r.not_after),
                _status(r, r.serial in revoked),
            )
            for r in chain
        ]
        body = f'<dl class="detail">{details}</dl>'
        body += "<h2>Renewals of this device</h2>"
        body += _table(("serial", "kind", "issued", "not after", "status"), chain_rows, empty="")
        if revocation is None:
            options = "".join(f'<option value="{r}">{r}</option>' for r in REASONS)
            body += (
                "<h2>Revoke</h2>"
                f'<form method="post" action="/certificates/{record.serial}/revoke">'
                f'<input type="hidden" name="csrf" value="{escape(session.csrf)}">'
                f'<label>Reason <select name="reason" id="reason">{options}</select></label> '
                '<button type="submit" class="revoke" id="revoke">Revoke</button></form>'
                '<p class="note">Revocation is final (no certificateHold).</p>'
            )
        return self._page(request, f"Certificate {record.serial}", body)

    def _renewals(self, record: IssuedRecord) -> list[IssuedRecord]:
        """The device's certificates from the first to the newest, through renewed_from;
        bounded, so a cycle in a damaged store cannot loop."""
        older: list[IssuedRecord] = []
        current = record
        while current.renewed_from and len(older) < 1000:
            previous = self.store.find_issued(current.renewed_from)
            if previous is None:
                break
            older.append(previous)
            current = previous
        newer: list[IssuedRecord] = []
        current = record
        while len(newer) < 1000 and (successor := self.store.successor_of(current.serial)):
            newer.append(successor)
            current = successor
        return [*reversed(older), record, *newer]

    async def revoke(self, request: web.Request) -> web.StreamResponse:
        session: Session = request[SESSION]
        serial = request.match_info["serial"].lower()
        form = await request.post()
        reason = str(form.get("reason", ""))
        if reason not in REASONS:
            raise web.HTTPBadRequest(text=f"reason: one of {', '.join(REASONS)}\n")
        try:
            record = await asyncio.to_thread(
                self.store.revoke,
                serial,
                reason=x509.ReasonFlags(reason),
                invalidity_date=None,
                revoked_by=f"console:{session.user}",
            )
        except UnknownCertificate as exc:
            raise web.HTTPNotFound(text=f"{exc}\n") from None
        except (AlreadyRevoked, StoreError) as exc:
            session.flash = f"!{exc}"
        else:
            session.flash = f"Certificate {record.serial} revoked ({record.reason})."
            log.info("console: %s revoked %s (%s)", session.user, record.serial, record.reason)
        raise web.HTTPSeeOther(f"/certificates/{serial}")

    # ---- fleet ---------------------------------------------------------------------

    async def fleet_page(self, request: web.Request) -> web.Response:
        sessions = self.dtls_sessions() if self.dtls_sessions else None
        # The tally is read here, on the loop that counts into it; a day of a large fleet's
        # records in a thread.
        hour = self.tally.since(fleet_view.HOUR) if self.tally else None
        day = self.tally.since(fleet_view.DAY) if self.tally else None
        figures = await asyncio.to_thread(fleet_view.read_store, self.store, hour, day, sessions)
        cards = [
            ("issued, last hour", sum(figures.issued_hour.values())),
            ("issued, last day", sum(figures.issued_day.values())),
            ("pending requests", figures.pending),
            ("expiring in 30 days", len(figures.expiring)),
            ("live DTLS sessions", "-" if sessions is None else sessions),
        ]
        body = (
            '<div class="cards">'
            + "".join(f'<div class="card"><div class="figure">{v}</div>{k}</div>' for k, v in cards)
            + "</div>"
        )
        body += "<h2>Certificates issued per hour, last 24 hours</h2>"
        body += fleet_view.bar_chart(figures.per_hour, title="certificates issued per hour")
        operations = sorted(set(figures.issued_day) | set(figures.issued_hour))
        body += "<h2>Certificates issued, by operation (the store)</h2>" + _table(
            ("operation", "last hour", "last day"),
            [
                _row(escape(op), str(figures.issued_hour[op]), str(figures.issued_day[op]))
                for op in operations
            ],
            empty="None in the last day.",
        )
        body += "<h2>Requests answered and failed, by front and operation (this process)</h2>"
        if figures.requests_day is None or figures.requests_hour is None:
            body += '<p class="empty">Not counted: this console runs without the fronts.</p>'
        else:
            hour, day = figures.requests_hour, figures.requests_day
            rows = []
            for key, counts in sorted(day.items()):
                last_hour = hour.get(key, Counter())
                cells = [str(c[o]) for c in (last_hour, counts) for o in OUTCOMES]
                rows.append(_row(escape(key[0]), escape(key[1]), *cells))
            body += _table(
                (
                    "front",
                    "operation",
                    "hour: done",
                    "hour: wait",
                    "hour: failed",
                    "day: done",
                    "day: wait",
                    "day: failed",
                ),
                rows,
                empty="No request since serve started (or in the last day).",
            )
            body += (
                '<p class="note">Done: 2.xx / 2xx. Wait: asked to come back (pending or try '
                "later: CoAP 5.03, HTTP 202/503). Failed: any other 4.xx/5.xx (CoAP) or "
                "4xx/5xx (HTTP). Counted by this serve process since it started.</p>"
            )
        body += "<h2>Certificates expiring in the next 30 days (not revoked)</h2>" + _table(
            ("serial", "subject", "not after", "requester"),
            [
                _row(
                    f'<a class="mono" href="/certificates/{r.serial}">{r.serial}</a>',
                    _name(r.subject),
                    escape(r.not_after),
                    _name(r.requester),
                )
                for r in figures.expiring
            ],
            empty="None.",
        )
        return self._page(request, "Fleet", body)

    # ---- layout --------------------------------------------------------------------

    def _page(self, request: web.Request, title: str, body: str) -> web.Response:
        session: Session = request[SESSION]
        here = ' class="here"'
        nav = "".join(
            f'<a href="{path}"{here if request.path.startswith(path) else ""}>{name}</a>'
            for path, name in PAGES
        )
        flash, session.flash = session.flash, None
        message = ""
        if flash:
            error = flash.startswith("!")
            message = _flash(flash[1:] if error else flash, error=error)
        html = self._layout.substitute(
            title=escape(title),
            nav=nav,
            user=escape(session.user),
            csrf=escape(session.csrf),
            flash=message,
            body=body,
        )
        return web.Response(text=html, content_type="text/html")


# ---- small HTML pieces ----------------------------------------------------------------


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _flash(text: str, *, error: bool = False) -> str:
    return f'<div class="flash{" error" if error else ""}" role="status">{escape(text)}</div>'


def _row(*cells: str) -> str:
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _table(headers: tuple[str, ...], rows: list[str], *, empty: str) -> str:
    if not rows:
        return f'<p class="empty">{escape(empty)}</p>' if empty else ""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _action_form(action: str, session: Session, label: str, *, css: str, id_: str) -> str:
    return (
        f'<form method="post" action="{action}" class="inline">'
        f'<input type="hidden" name="csrf" value="{escape(session.csrf)}">'
        f'<button type="submit" class="{css}" id="{id_}">{escape(label)}</button></form> '
    )


def _status(record: IssuedRecord, revoked: bool) -> str:
    if revoked:
        return '<span class="badge revoked">revoked</span>'
    if dt.datetime.fromisoformat(record.not_after) < dt.datetime.now(dt.UTC):
        return '<span class="badge">expired</span>'
    return '<span class="badge valid">valid</span>'


def _name(text: str) -> str:
    """A subject or requester as people type it (serialNumber=dev-1, not 2.5.4.5=dev-1),
    escaped for HTML."""
    kind, sep, rest = text.partition(":")
    if sep and kind.isalpha():  # a requester: cert:SUBJECT, user:NAME, psk:IDENTITY
        return f"{escape(kind)}:{_name(rest)}" if kind == "cert" else escape(text)
    try:
        return escape(format_name(parse_name(text)))
    except (ValueError, TypeError):
        return escape(text)


def _age(delta: dt.timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def _csr_summary(der: bytes) -> tuple[str, str]:
    """The SANs and the key type a CSR asks for, as text."""
    try:
        csr = x509.load_der_x509_csr(der)
    except ValueError:
        return "?", "?"
    try:
        ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = ", ".join(
            f"{type(n).__name__.removesuffix('Name')}:{n.value}"
            if not isinstance(n, x509.OtherName)
            else f"otherName:{n.type_id.dotted_string}"
            for n in ext
        )
    except (x509.ExtensionNotFound, ValueError):
        sans = ""
    return sans or "-", _key_type(csr.public_key())


def _key_type(key: Any) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA {key.key_size}"
    return type(key).__name__
