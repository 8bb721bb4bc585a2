"""Operating a server (issue 16, docs/operations.md): `serve --metrics` during real
enrollments over CoAPs and HTTPS, checked with prometheus_client's parser and promtool;
/healthz and /readyz (503 naming the read-only store); the request log's lines and that no
secret reaches any log at DEBUG."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from estcoap.idevid import DeviceMaker
from tests.conftest import require
from tests.integration.test_cli_consistency import _read_only

parser = pytest.importorskip("prometheus_client.parser")

pytestmark = pytest.mark.timeout(180)

CLI = [sys.executable, "-m", "estcoap.cli"]
PASSWORD = "Sup3r-s3cret-pw"
SHARED_KEY = "5a" * 16


def ok(*args: str | Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@dataclass
class Served:
    urls: dict[str, str]
    proc: subprocess.Popen[str]

    @property
    def ops(self) -> str:
        return self.urls["http"]

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.ops + path, timeout=30) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, body = self.get("/metrics")
        assert status == 200
        samples = {}
        for family in parser.text_string_to_metric_families(body.decode()):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return samples


@contextlib.contextmanager
def serve(*args: str | Path) -> Iterator[Served]:
    """`estcoap serve --https --coaps --metrics` on free ports; stderr (the log) is read
    when it has stopped (Served.proc.stderr)."""
    proc = subprocess.Popen(
        [
            *CLI,
            "serve",
            "--https",
            "127.0.0.1:0",
            "--coaps",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            *map(str, args),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    urls: dict[str, str] = {}
    try:
        while "http" not in urls:  # the metrics listener starts last
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line.startswith("serving "), line + proc.stderr.read()  # type: ignore[union-attr]
            url = line.rsplit(" ", 1)[1].strip().removesuffix("/metrics")
            urls["psk" if "PSK DTLS" in line else url.split(":", 1)[0]] = url
        yield Served(urls, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        for stream in (proc.stdout, proc.stderr):
            stream.close()  # type: ignore[union-attr]


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@dataclass
class Site:
    ca: Path
    maker: Path
    idevid: Path
    idevid_key: Path
    tmp: Path

    @property
    def device(self) -> tuple[str | Path, ...]:
        return ("--trust", self.ca / "ca.pem", "--cert", self.idevid, "--cert-key", self.idevid_key)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    ca = tmp_path / "ca"
    ok("ca", "init", ca, "--hostname", "127.0.0.1")
    maker = DeviceMaker.create()
    idevid, key = maker.issue_idevid("ops-device")
    maker_pem, idevid_pem, idevid_key = (tmp_path / n for n in ("maker.pem", "id.pem", "id.key"))
    maker_pem.write_bytes(maker.certificate.public_bytes(serialization.Encoding.PEM))
    idevid_pem.write_bytes(idevid.public_bytes(serialization.Encoding.PEM))
    idevid_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    idevid_key.chmod(0o600)
    return Site(ca, maker_pem, idevid_pem, idevid_key, tmp_path)


def test_metrics_move_with_enrollments_over_coaps_and_https(site: Site) -> None:
    me = "serialNumber=ops-device"
    with serve(
        "--ca",
        site.ca,
        "--trust-clients",
        site.maker,
        "--user",
        f"alice:{PASSWORD}",
        "--http-auth",
        "basic",
    ) as served:
        before = served.scrape()
        assert value(before, "estcoap_certificates_issued_total", kind="new") == 0
        ok(
            "enroll",
            served.urls["coaps"],
            *site.device,
            "--key",
            site.tmp / "d1.key",
            "--subject",
            f"{me},CN=one",
            "--out",
            site.tmp / "d1.pem",
        )
        ok(
            "enroll",
            served.urls["https"],
            "--trust",
            site.ca / "ca.pem",
            "--user",
            f"alice:{PASSWORD}",
            "--key",
            site.tmp / "u.key",
            "--subject",
            "CN=alice-box",
            "--out",
            site.tmp / "u.pem",
        )
        wrong = ["--user", "alice:wrong", "--key", site.tmp / "x.key", "--subject", "CN=x"]
        wrong += ["--trust", site.ca / "ca.pem", "--out", site.tmp / "x.pem"]
        subprocess.run(
            [*CLI, "enroll", served.urls["https"], *wrong], capture_output=True, timeout=60
        )
        after = served.scrape()
        status, text = served.get("/metrics")

    coaps = dict(front="coaps", operation="simpleenroll")
    https = dict(front="https", operation="simpleenroll")
    assert value(after, "estcoap_requests_total", code="2.04", **coaps) == 1
    assert value(after, "estcoap_requests_total", code="200", **https) == 1
    assert value(after, "estcoap_requests_total", code="401", **https) >= 1
    for labels in (coaps, https):
        assert value(after, "estcoap_request_duration_seconds_count", **labels) >= 1
        assert value(after, "estcoap_request_duration_seconds_sum", **labels) > 0
        assert value(after, "estcoap_request_duration_seconds_bucket", le="10.0", **labels) >= 1
    assert value(after, "estcoap_certificates_issued_total", kind="new") == 2
    assert value(after, "estcoap_dtls_handshakes_total", result="completed", reason="") >= 1
    assert value(after, "estcoap_http_auth_failures_total", scope="source") >= 1
    assert value(after, "estcoap_pending_requests", state="pending") == 0
    assert value(after, "estcoap_certificate_expiry_seconds", certificate="ca") > 86400 * 300
    assert value(after, "estcoap_certificate_expiry_seconds", certificate="server") > 86400 * 300
    assert ("estcoap_dtls_sessions", ()) in after
    assert ("estcoap_blockwise_transfers", (("direction", "block1"),)) in after
    # Bounded labels only: no peer address, no subject anywhere in the exposition.
    assert b"127.0.0.1" not in text and b"ops-device" not in text and b"alice" not in text

    promtool = require("promtool", "promtool checks the exposition (Debian: prometheus)")
    checked = subprocess.run(
        [str(promtool), "check", "metrics"], input=text, capture_output=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_health_and_readiness_name_a_read_only_store(site: Site) -> None:
    with serve("--ca", site.ca) as served:
        assert served.get("/healthz")[0] == 200
        status, body = served.get("/readyz")
        assert status == 200, body
        assert json.loads(body)["checks"] == {"store": "ok", "ca_key": "ok"}
        with _read_only(site.ca / "est.sqlite3"):
            status, body = served.get("/readyz")
            assert served.get("/healthz")[0] == 200  # alive, not ready
        assert status == 503, body
        report = json.loads(body)
        assert report["status"] == "not ready" and report["checks"]["ca_key"] == "ok"
        assert "est.sqlite3 is read-only" in report["checks"]["store"]
        assert served.get("/readyz")[0] == 200  # ready again once writable


def test_request_log_lines_and_no_secret_in_any_log(site: Site) -> None:
    """A full set at DEBUG: coaps enroll with PoP, serverkeygen (plain and enveloped with a
    shared key), HTTPS with Basic and with Digest, a wrong password; then the log holds one
    request line each and none of the secrets."""
    me = "serialNumber=ops-device"
    shared = site.tmp / "shared.keys"
    shared.write_text(f"0a0b {SHARED_KEY}\n")
    t = site.tmp
    with serve(
        "--ca",
        site.ca,
        "--trust-clients",
        site.maker,
        "--shared-keys",
        shared,
        "--user",
        f"alice:{PASSWORD}",
        "--log-level",
        "debug",
    ) as served:
        coaps, https = served.urls["coaps"], served.urls["https"]
        ok(
            "enroll",
            coaps,
            *site.device,
            "--key",
            t / "d1.key",
            "--subject",
            f"{me},CN=a",
            "--pop",
            "--out",
            t / "d1.pem",
        )
        ok(
            "serverkeygen",
            coaps,
            *site.device,
            "--subject",
            f"{me},CN=b",
            "--out",
            t / "k.pem",
            "--out-key",
            t / "k.key",
        )
        ok(
            "serverkeygen",
            coaps,
            *site.device,
            "--subject",
            f"{me},CN=c",
            "--out",
            t / "s.pem",
            "--out-key",
            t / "s.key",
            "--shared-key",
            f"0a0b:{SHARED_KEY}",
        )
        ok(
            "enroll",
            https,
            "--trust",
            site.ca / "ca.pem",
            "--user",
            f"alice:{PASSWORD}",
            "--key",
            t / "digest.key",
            "--subject",
            "CN=digest-box",
            "--pop",
            "--out",
            t / "digest.pem",
        )  # the client takes Digest when offered
        log = _stopped(served)
    with serve(
        "--ca",
        site.ca,
        "--user",
        f"alice:{PASSWORD}",
        "--http-auth",
        "basic",
        "--log-level",
        "debug",
    ) as served:
        https = served.urls["https"]
        ok(
            "enroll",
            https,
            "--trust",
            site.ca / "ca.pem",
            "--user",
            f"alice:{PASSWORD}",
            "--key",
            t / "basic.key",
            "--subject",
            "CN=basic-box",
            "--pop",
            "--out",
            t / "basic.pem",
        )
        subprocess.run(
            [
                *CLI,
                "cacerts",
                https,
                "--trust",
                site.ca / "ca.pem",
                "--user",
                f"alice:{PASSWORD}x",
                "--out",
                t / "c.pem",
            ],
            capture_output=True,
            timeout=60,
        )
        log += _stopped(served)

    assert " DEBUG " in log  # the level that logs the most
    lines = [line for line in log.splitlines() if " estcoap.requests: " in line]
    assert any(
        re.search(r"coaps \S+ cert:\S*ops-device\S* simpleenroll label=- 2\.04 [\d.]+ ms", line)
        for line in lines
    ), lines
    assert sum("https 127.0.0.1 user:alice simpleenroll label=- 200" in line for line in lines) == 2
    assert any(" serverkeygen " in line and " 2.04 " in line for line in lines)
    basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    secrets = [PASSWORD, basic, SHARED_KEY, "Authorization", "BEGIN PRIVATE KEY", "response="]
    for key_file in (
        t / "d1.key",
        t / "k.key",
        t / "s.key",
        t / "basic.key",
        t / "digest.key",
        site.idevid_key,
        site.ca / "ca.key",
        site.ca / "server.key",
    ):
        body = "".join(key_file.read_text().splitlines()[1:-1])
        secrets += [body[i : i + 40] for i in range(0, len(body) - 40, 40)]
    for secret in secrets:
        assert secret not in log, secret
    # No DER in base64 at all (a CSR carries the PoP challengePassword, a key is a key).
    assert not re.search(r"MII[A-Za-z0-9+/]{40}", log)
    assert "challengePassword" not in log or not re.search(r"challengePassword\S*[:=] *\S", log)


def _stopped(served: Served) -> str:
    served.proc.send_signal(signal.SIGTERM)
    served.proc.wait(30)
    return served.proc.stderr.read()  # type: ignore[union-attr]


def test_json_log_format_is_one_object_per_line(site: Site) -> None:
    with serve("--ca", site.ca, "--log-level", "info", "--log-format", "json") as served:
        ok(
            "cacerts",
            served.urls["https"],
            "--trust",
            site.ca / "ca.pem",
            "--out",
            site.tmp / "c.pem",
        )
        served.proc.send_signal(signal.SIGTERM)
        served.proc.wait(30)
        log = served.proc.stderr.read()  # type: ignore[union-attr]
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    request = next(r for r in records if r["logger"] == "estcoap.requests")
    assert request["front"] == "https" and request["operation"] == "cacerts"
    assert request["code"] == "200" and request["identity"].startswith("anonymous@")
    assert request["peer"] == "127.0.0.1" and isinstance(request["ms"], float)


def test_ca_audit_lists_issuance_approval_denial_and_revocation(site: Site) -> None:
    """Enrolled over CoAPs (the policy decided), two requests decided and a certificate
    revoked with the CLI (the operator decided): `ca audit` says who asked, who decided
    and when."""
    from estcoap.ca import CaPaths, Store

    with serve("--ca", site.ca, "--trust-clients", site.maker) as served:
        ok(
            "enroll",
            served.urls["coaps"],
            *site.device,
            "--key",
            site.tmp / "d.key",
            "--subject",
            "serialNumber=ops-device",
            "--out",
            site.tmp / "d.pem",
        )
    with Store.open(CaPaths.of(site.ca).store, create=False) as store:
        ids = [
            store.submit_pending(
                operation="enroll",
                label=None,
                csr_der=b"-",
                csr_sha256=name,
                subject=f"CN={name}",
                requester=f"user:{name}",
            ).id
            for name in ("kept", "refused")
        ]
    ok("pending", "approve", site.ca, str(ids[0]))
    ok("pending", "deny", site.ca, str(ids[1]))
    ok("ca", "revoke", site.ca, "--cert", site.tmp / "d.pem", "--reason", "keyCompromise")

    rows = [json.loads(line) for line in ok("ca", "audit", site.ca, "--json").stdout.splitlines()]
    by_event = {row["event"]: row for row in rows if row["event"] != "issued"}
    issued = [row for row in rows if row["event"] == "issued"]
    operator = by_event["revoked"]["decided_by"]
    assert operator.startswith("cli:")
    assert (
        issued[-1]["requested_by"].startswith("cert:")
        and "ops-device" in issued[-1]["requested_by"]
        and issued[-1]["decided_by"] == "auto"
    )
    assert by_event["approved"]["request_id"] == ids[0]
    assert by_event["approved"]["requested_by"] == "user:kept"
    assert by_event["approved"]["decided_by"] == operator
    assert by_event["denied"]["requested_by"] == "user:refused"
    assert by_event["denied"]["decided_by"] == operator
    assert by_event["revoked"]["serial"] == issued[-1]["serial"]
    assert by_event["revoked"]["detail"] == "keyCompromise"
    for row in rows:
        assert dt.datetime.fromisoformat(row["at"]).tzinfo is not None

    table = ok("ca", "audit", site.ca, "--since", "1h").stdout.splitlines()
    assert table[0].split()[:3] == ["when", "event", "serial"] and len(table) == len(rows) + 1
    assert ok("ca", "audit", site.ca, "--since", "2999-01-01", "--json").stdout == ""
    done = subprocess.run(
        [*CLI, "ca", "audit", site.ca, "--since", "soon"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1


def _line(proc: subprocess.Popen[str], prefix: str) -> str:
    """The URL at the end of the first stdout line that starts with prefix."""
    for _ in range(5):
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if line.startswith(prefix):
            return line.split(" -> ")[0].rsplit(" ", 1)[1].strip().removesuffix("/metrics")
    raise AssertionError(f"no line {prefix!r}: " + proc.stderr.read())  # type: ignore[union-attr]


def test_proxy_reports_upstream_latency_errors_and_readiness(site: Site) -> None:
    """The proxy forwards an enrollment (upstream latency moves), then loses its upstream:
    the next one is an upstream error and /readyz says the upstream is unreachable."""
    ra_cert, ra_key = site.tmp / "ra.pem", site.tmp / "ra.key"
    ok("ca", "issue-ra", site.ca, "--out-cert", ra_cert, "--out-key", ra_key)
    upstream = subprocess.Popen(
        [*CLI, "serve", "--ca", site.ca, "--https", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proxy = None
    try:
        upstream_url = _line(upstream, "serving EST over HTTPS")
        proxy = subprocess.Popen(
            [
                *CLI,
                "proxy",
                "--https",
                "127.0.0.1:0",
                "--metrics",
                "127.0.0.1:0",
                "--upstream",
                upstream_url,
                "--upstream-trust",
                site.ca / "ca.pem",
                "--ra-cert",
                ra_cert,
                "--ra-key",
                ra_key,
                "--server-cert",
                site.ca / "server.pem",
                "--server-key",
                site.ca / "server.key",
                "--user",
                f"bob:{PASSWORD}",
                "--upstream-timeout",
                "5",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        served = Served(
            {"https": _line(proxy, "proxy: serving"), "http": _line(proxy, "serving metrics")},
            proxy,
        )
        user = ["--trust", site.ca / "ca.pem", "--user", f"bob:{PASSWORD}"]
        ok(
            "enroll",
            served.urls["https"],
            *user,
            "--key",
            site.tmp / "p.key",
            "--subject",
            "CN=proxied",
            "--out",
            site.tmp / "p.pem",
        )
        status, body = served.get("/readyz")
        assert status == 200 and json.loads(body)["checks"] == {"upstream": "ok"}, body
        during = served.scrape()
        assert (
            value(
                during,
                "estcoap_requests_total",
                front="proxy",
                operation="simpleenroll",
                code="200",
            )
            == 1
        )
        assert (
            value(
                during, "estcoap_upstream_request_duration_seconds_count", operation="simpleenroll"
            )
            == 1
        )
        assert value(during, "estcoap_certificate_expiry_seconds", certificate="ra") > 0
        assert value(during, "estcoap_certificate_expiry_seconds", certificate="server") > 0

        upstream.send_signal(signal.SIGTERM)
        upstream.wait(30)
        failed = subprocess.run(
            [
                *CLI,
                "enroll",
                served.urls["https"],
                *user,
                "--key",
                site.tmp / "q.key",
                "--subject",
                "CN=lost",
                "--out",
                site.tmp / "q.pem",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert failed.returncode != 0 and "502" in failed.stderr, failed.stderr
        after = served.scrape()
        assert (
            value(
                after,
                "estcoap_upstream_errors_total",
                operation="simpleenroll",
                reason="unavailable",
            )
            == 1
        )
        assert (
            value(
                after, "estcoap_requests_total", front="proxy", operation="simpleenroll", code="502"
            )
            == 1
        )
        status, body = served.get("/readyz")
        assert status == 503, body
        assert json.loads(body)["checks"]["upstream"].startswith("upstream unreachable")
    finally:
        for proc in (proxy, upstream):
            if proc is not None:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(30)
                for stream in (proc.stdout, proc.stderr):
                    stream.close()  # type: ignore[union-attr]


def test_failed_dtls_handshakes_are_counted_by_reason(site: Site) -> None:
    """A device whose IDevID comes from a maker the server does not trust: its handshake
    fails as untrusted; none completes."""
    stranger = DeviceMaker.create()
    cert, key = stranger.issue_idevid("stranger")
    cert_pem, key_pem = site.tmp / "s.pem", site.tmp / "s.key"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_pem.chmod(0o600)
    with serve("--ca", site.ca, "--trust-clients", site.maker) as served:
        refused = subprocess.run(
            [
                *CLI,
                "enroll",
                served.urls["coaps"],
                "--trust",
                site.ca / "ca.pem",
                "--cert",
                cert_pem,
                "--cert-key",
                key_pem,
                "--key",
                site.tmp / "n.key",
                "--subject",
                "serialNumber=stranger",
                "--out",
                site.tmp / "n.pem",
                "--timeout",
                "10",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode != 0
        samples = served.scrape()
    assert value(samples, "estcoap_dtls_handshakes_total", result="failed", reason="untrusted") >= 1
    assert value(samples, "estcoap_dtls_handshakes_total", result="completed", reason="") == 0
    assert value(samples, "estcoap_dtls_sessions") == 0


def test_psk_enrollments_are_counted_on_the_coaps_front(site: Site) -> None:
    require("DTLSSocket", "PSK DTLS runs on DTLSSocket (the psk extra)")
    key_file = site.tmp / "dev.psk"
    key_file.write_text("a1" * 16 + "\n")
    ok("psk", "add", site.ca, "dev-1", "--psk-key-file", key_file)
    with serve("--ca", site.ca, "--coaps-psk", "127.0.0.1:0") as served:
        ok(
            "enroll",
            served.urls["psk"],
            "--psk-identity",
            "dev-1",
            "--psk-key-file",
            key_file,
            "--key",
            site.tmp / "dev.key",
            "--out",
            site.tmp / "dev.pem",
        )
        samples = served.scrape()
    labels = dict(front="coaps", operation="simpleenroll", code="2.04")
    assert value(samples, "estcoap_requests_total", **labels) == 1
    assert value(samples, "estcoap_certificates_issued_total", kind="new") == 1
