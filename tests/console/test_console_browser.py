"""The console in headless Chromium (Debian's chromium and chromium-driver, driven by
selenium): sign in, approve the pending request of a real device enrolling over CoAPs
(its next poll gets the certificate), find that certificate, revoke it, and see the
device's re-enrollment refused 4.03. A screenshot of each page goes to
tmp_path/screenshots; the pending page also to docs/console.png for the README when
docs/console.png is missing or ESTCOAP_CONSOLE_SCREENSHOT=1 is set (otherwise every run
would change a file in the checkout)."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from estcoap.ca import CaPaths, Store
from estcoap.client import EstClient, EstClientError
from tests.console.console_procs import (
    CONSOLE_PASSWORD,
    CONSOLE_USER,
    add_console_user,
    serve_with_console,
)
from tests.interop.gateway_procs import Pki, make_pki

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec_wait  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="needs Debian's chromium and chromium-driver (scripts/test installs them)",
    ),
]
ROOT = Path(__file__).resolve().parents[2]
WAIT = 90  # seconds: a busy 2-core machine starts Chromium slowly


@pytest.fixture(name="browser")
def browser_fixture():  # type: ignore[no-untyped-def]
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    # The server certificate is the test CA's, which this throwaway profile does not trust.
    options.accept_insecure_certs = True
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def _device_enrolls(pki: Pki, url: str, key: ec.EllipticCurvePrivateKey, result: dict) -> None:
    """The device: enroll with its IDevID and keep polling while the answer is pending."""

    async def enroll() -> list[x509.Certificate]:
        async with EstClient(
            url,
            trust=pki.ca_pem,
            cert=pki.device_cert,
            key=pki.device_key,
            max_pending_wait=WAIT * 2,
            max_pending_attempts=1000,
            on_pending=lambda s: result.setdefault("pending", s),
        ) as est:
            idevid = est.cert_chain[0]
            return await est.enroll(key=key, subject=idevid.subject)

    try:
        result["chain"] = asyncio.run(enroll())
    except Exception as exc:  # reported by the test
        result["error"] = exc


def _hold_session(pki: Pki, url: str, held: threading.Event, release: threading.Event) -> None:
    async def hold() -> None:
        async with EstClient(
            url, trust=pki.ca_pem, cert=pki.device_cert, key=pki.device_key
        ) as est:
            await est.cacerts()
            held.set()
            await asyncio.to_thread(release.wait, WAIT)

    asyncio.run(hold())


def test_approve_a_device_then_revoke_it(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pki = make_pki(tmp_path / "pki")
    add_console_user(pki.ca_dir)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with serve_with_console(
        pki, "--coaps", "127.0.0.1:0", "--approval", "manual", "--retry-after", "1"
    ) as serve:
        assert serve.coaps
        key = ec.generate_private_key(ec.SECP256R1())
        result: dict = {}
        device = threading.Thread(target=_device_enrolls, args=(pki, serve.coaps, key, result))
        device.start()
        try:
            wait = WebDriverWait(browser, WAIT)
            browser.get(serve.console + "pending")  # no session yet: sent to the sign-in page
            wait.until(ec_wait.presence_of_element_located((By.ID, "sign-in")))
            browser.save_screenshot(str(shots / "login.png"))
            browser.find_element(By.ID, "user").send_keys(CONSOLE_USER)
            browser.find_element(By.ID, "password").send_keys(CONSOLE_PASSWORD)
            browser.find_element(By.ID, "sign-in").click()
            wait.until(
                ec_wait.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Pending requests")
            )

            # The device's request shows up; reload until it does (it polls meanwhile).
            def approve_button(driver):  # type: ignore[no-untyped-def]
                driver.refresh()
                found = driver.find_elements(By.CSS_SELECTOR, "button.approve")
                return found[0] if found else False

            button = WebDriverWait(browser, WAIT, poll_frequency=1).until(approve_button)
            assert "pending" in result, "the device was not told to wait"
            row = browser.find_element(By.CSS_SELECTOR, "tbody tr").text
            assert "serialNumber=device-1" in row and "EC secp256r1" in row
            assert "cert:" in row  # the requester: the device, by its IDevID
            browser.save_screenshot(str(shots / "pending.png"))
            readme_shot = ROOT / "docs" / "console.png"
            if not readme_shot.exists() or os.environ.get("ESTCOAP_CONSOLE_SCREENSHOT") == "1":
                shutil.copyfile(shots / "pending.png", readme_shot)
            button.click()
            wait.until(
                ec_wait.text_to_be_present_in_element((By.CSS_SELECTOR, ".flash"), "approved")
            )

            device.join(WAIT * 2)
            assert not device.is_alive() and "error" not in result, result
            issued = result["chain"][0]
            serial = format(issued.serial_number, "x")
            assert issued.public_key().public_numbers() == key.public_key().public_numbers()

            # Find it by the device's serialNumber, open it, revoke it.
            browser.get(serve.console + "certificates")
            browser.find_element(By.ID, "q").send_keys("device-1\n")
            wait.until(ec_wait.presence_of_element_located((By.LINK_TEXT, serial)))
            browser.save_screenshot(str(shots / "certificates.png"))
            browser.find_element(By.LINK_TEXT, serial).click()
            wait.until(ec_wait.presence_of_element_located((By.ID, "revoke")))
            assert "Renewals of this device" in browser.page_source
            browser.save_screenshot(str(shots / "certificate.png"))
            Select(browser.find_element(By.ID, "reason")).select_by_value("keyCompromise")
            browser.find_element(By.ID, "revoke").click()
            wait.until(
                ec_wait.text_to_be_present_in_element((By.CSS_SELECTOR, ".flash"), "revoked")
            )
            assert browser.find_elements(By.ID, "revoke") == []  # nothing left to revoke
            browser.save_screenshot(str(shots / "revoked.png"))

            # A device holding a DTLS session while the operator looks at the fleet.
            held, release = threading.Event(), threading.Event()
            holder = threading.Thread(target=_hold_session, args=(pki, serve.coaps, held, release))
            holder.start()
            try:
                assert held.wait(WAIT), "no DTLS session"
                browser.get(serve.console + "fleet")
                wait.until(ec_wait.presence_of_element_located((By.CSS_SELECTOR, "svg.chart")))
                cards = {
                    c.text.split("\n")[1]: c.text.split("\n")[0]
                    for c in browser.find_elements(By.CSS_SELECTOR, ".card")
                }
            finally:
                release.set()
                holder.join(WAIT)
            assert int(cards["live DTLS sessions"]) >= 1, cards
            assert cards["pending requests"] == "0", cards
            rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "tbody tr")]
            # The device's polls: answered "wait" at least once, then done; none failed.
            (polls,) = [r.split() for r in rows if r.startswith("coaps simpleenroll")]
            hour_done, hour_wait, hour_failed = map(int, polls[2:5])
            assert hour_done == 1 and hour_wait >= 1 and hour_failed == 0, rows
            assert "enroll 1 1" in rows, rows  # issued by operation: the store's count
            browser.save_screenshot(str(shots / "fleet.png"))
        finally:
            device.join(5)

        # The device's re-enrollment with the revoked certificate is refused.
        async def reenroll() -> EstClientError:
            async with EstClient(
                serve.coaps, trust=pki.ca_pem, cert=result["chain"], key=key
            ) as est:
                with pytest.raises(EstClientError) as refused:
                    await est.reenroll()
            return refused.value

        refused = asyncio.run(reenroll())
        assert refused.status == "4.03" and "revoked" in refused.diagnostic, refused

    with Store.open(CaPaths.of(pki.ca_dir).store, create=False) as store:
        trail = {(a.event, a.serial or a.request_id): a.decided_by for a in store.audit_list()}
    who = f"console:{CONSOLE_USER}"
    assert trail[("revoked", serial)] == who
    assert trail[("issued", serial)] == who  # the approval behind it
    assert who in [d for (event, _), d in trail.items() if event == "approved"]
    for name in ("login", "pending", "certificates", "certificate", "revoked", "fleet"):
        assert (shots / f"{name}.png").stat().st_size > 1000
