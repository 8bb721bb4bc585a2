"""Helpers for the console tests: `estcoap serve --console` in a subprocess, its URLs, and
a small cookie-keeping HTTP client over the real socket (urllib, no redirects followed)."""

from __future__ import annotations

import contextlib
import http.cookiejar
import re
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.interop.gateway_procs import ESTCOAP, Pki, serving

CONSOLE_USER, CONSOLE_PASSWORD = "alice", "console-secret-1"
EST_USER, EST_PASSWORD = "device-user", "est-secret-123"

# Everything serve prints up to its last front's line: the console's comes first.
_READY = r"(serving the console on [\s\S]*serving EST(?:-coaps| over HTTPS) on \S+\n)"


def add_console_user(ca_dir: Path, name: str = CONSOLE_USER, password: str = CONSOLE_PASSWORD):
    done = subprocess.run(
        [*ESTCOAP, "console", "user", "add", str(ca_dir), name],
        input=f"{password}\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done


@dataclass
class Serve:
    process: subprocess.Popen[str]
    console: str  # https://127.0.0.1:PORT/
    coaps: str | None
    https: str | None


@contextlib.contextmanager
def serve_with_console(pki: Pki, *extra: object) -> Iterator[Serve]:
    args: list[object] = [
        "serve",
        "--ca",
        pki.ca_dir,
        "--console",
        "127.0.0.1:0",
        "--trust-clients",
        pki.maker_pem,
        *extra,
    ]
    with serving(args, _READY, timeout=60) as server:
        text = server.url
        console = re.search(r"serving the console on (\S+)", text)
        coaps = re.search(r"serving EST-coaps on (\S+)", text)
        https = re.search(r"serving EST over HTTPS on (\S+)", text)
        assert console, text
        yield Serve(
            server.process,
            console.group(1),
            coaps.group(1) if coaps else None,
            https.group(1) if https else None,
        )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str


class Web:
    """One browser-like client: a cookie jar, the CA as its trust anchor."""

    def __init__(self, base: str, cafile: Path | None) -> None:
        self.base = base.rstrip("/")
        self.jar = http.cookiejar.CookieJar()
        handlers: list[urllib.request.BaseHandler] = [
            urllib.request.HTTPCookieProcessor(self.jar),
            _NoRedirect(),
        ]
        if cafile is not None:
            ctx = ssl.create_default_context(cafile=str(cafile))
            handlers.append(urllib.request.HTTPSHandler(context=ctx))
        self.opener = urllib.request.build_opener(*handlers)

    def request(self, method: str, path: str, fields: dict[str, str] | None = None) -> Reply:
        data = urllib.parse.urlencode(fields).encode() if fields is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        try:
            with self.opener.open(req, timeout=30) as resp:
                return Reply(resp.status, dict(resp.headers), resp.read().decode())
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, dict(exc.headers), exc.read().decode())

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post(self, path: str, fields: dict[str, str]) -> Reply:
        return self.request("POST", path, fields)

    def csrf(self, path: str) -> str:
        page = self.get(path)
        assert page.status == 200, (page.status, page.body[:200])
        found = re.search(r'name="csrf" value="([^"]+)"', page.body)
        assert found, page.body[:500]
        return found.group(1)

    def sign_in(self, user: str = CONSOLE_USER, password: str = CONSOLE_PASSWORD) -> Reply:
        token = self.csrf("/login")
        return self.post("/login", {"csrf": token, "user": user, "password": password})

    def cookies(self) -> dict[str, str]:
        return {c.name: c.value or "" for c in self.jar}
