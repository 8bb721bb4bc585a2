"""The store queries the console adds (search, issued since, expiring), its request tally,
and its chart, on a real SQLite store."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from estcoap.ca import Store
from estcoap.console import start_console
from estcoap.console.fleet import bar_chart
from estcoap.console.tally import RequestTally
from tests.console.console_procs import Web, add_console_user

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def _cert(serial: int, cn: str, days: int) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )


def test_search_since_and_expiring(tmp_path: Path) -> None:
    with Store.open(tmp_path / "est.sqlite3") as store:
        store.record_issued(_cert(0xABC1, "meter_1", 10), requester="user:ops", operation="enroll")
        store.record_issued(_cert(0xABC2, "meterX1", 20), requester="user:ops", operation="enroll")
        store.record_issued(_cert(0x1234, "pump-7", 90), requester="cert:CN=ra", operation="enroll")
        assert [r.subject for r in store.issued_search("meter_")] == ["CN=meter_1"]  # _ literal
        assert store.issued_search("100%") == []
        assert [r.serial for r in store.issued_search("0xabc")] == ["abc2", "abc1"]  # newest first
        assert [r.serial for r in store.issued_search("CN=RA")] == ["1234"]  # requester, any case
        assert len(store.issued_search("", limit=2)) == 2
        assert len(store.issued_since(NOW - dt.timedelta(minutes=5))) == 3
        assert store.issued_since(NOW + dt.timedelta(minutes=5)) == []
        soon = store.expiring_between(NOW, NOW + dt.timedelta(days=30))
        assert [r.serial for r in soon] == ["abc1", "abc2"]  # soonest first; pump-7 is later
        store.revoke(
            "abc1",
            reason=x509.ReasonFlags.superseded,
            invalidity_date=None,
            revoked_by="console:alice",
        )
        assert [r.serial for r in store.expiring_between(NOW, NOW + dt.timedelta(days=30))] == [
            "abc2"
        ]


def test_tally_outcomes_and_window() -> None:
    clock = [1_000_000.0]
    tally = RequestTally(clock=lambda: clock[0])
    hook = tally.front("coaps")
    for code in ("5.03", "5.03", "2.01", "4.03", "5.00"):
        hook.request_done("simpleenroll", code, 0.01, label=None, address=None, peer=None)
    tally.front("https").request_done("cacerts", "200", 0.01)
    counts = tally.since(3600)
    assert dict(counts[("coaps", "simpleenroll")]) == {"wait": 2, "done": 1, "failed": 2}
    assert dict(counts[("https", "cacerts")]) == {"done": 1}
    clock[0] += 2 * 3600
    assert tally.since(3600) == {}
    assert dict(tally.since(24 * 3600)[("coaps", "simpleenroll")]) == {
        "wait": 2,
        "done": 1,
        "failed": 2,
    }
    clock[0] += 24 * 3600
    tally.front("coaps").request_done("simplereenroll", "2.04", 0.01)  # prunes the old minutes
    assert list(tally.since(48 * 3600)) == [("coaps", "simplereenroll")]


def test_chart_is_svg_with_one_bar_per_hour() -> None:
    svg = bar_chart([0] * 23 + [5], title="issued <per> hour")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count('<rect class="bar"') == 24
    assert "issued &lt;per&gt; hour" in svg and "<script" not in svg


async def test_a_certificate_page_shows_the_devices_renewals_in_order(tmp_path: Path) -> None:
    (tmp_path / "ca").mkdir()
    add_console_user(tmp_path / "ca")
    with Store.open(tmp_path / "ca" / "est.sqlite3") as store:
        store.record_issued(_cert(0x10, "other", 90), requester="user:x", operation="enroll")
        previous = None
        for serial in (0xA1, 0xA2, 0xA3):
            store.record_issued(
                _cert(serial, "dev", 90),
                requester="cert:CN=dev",
                renewed_from=previous,
                operation="enroll" if previous is None else "reenroll",
                kind="new" if previous is None else "renew",
            )
            previous = format(serial, "x")
        server = await start_console(
            store, "127.0.0.1", 0, plain_http=True, users_file=tmp_path / "ca" / "console-users"
        )
        try:
            web = Web(server.url, None)
            await asyncio.to_thread(web.sign_in)
            page = (await asyncio.to_thread(web.get, "/certificates/a2")).body
        finally:
            await server.close()
    chain = page.split("Renewals of this device")[1]
    assert chain.index(">a1<") < chain.index(">a2<") < chain.index(">a3<")
    assert ">10<" not in chain and "(this one)" in chain
