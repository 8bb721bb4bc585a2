"""`estcoap gateway --event-loop`: asyncio's loop always, uvloop when installed (estcoap[fast]);
a device enrolls through a gateway on each, and asking for a missing uvloop is one line."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from estcoap.client import EstClient
from estcoap.codec.names import parse_name
from estcoap.codec.pkcs10 import build_csr
from estcoap.gateway.loop import loop_factory, run
from tests.conftest import require
from tests.interop.gateway_procs import (
    ESTCOAP,
    GATEWAY_READY,
    UPSTREAM_READY,
    Pki,
    gateway_args,
    make_pki,
    serving,
    upstream_args,
)

pytestmark = pytest.mark.timeout(90)

LOOPS = ["asyncio", "uvloop"]


def need_loop(loop: str) -> None:
    if loop == "uvloop":
        require("uvloop", "the gateway on uvloop (pip install 'estcoap[fast]')")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("loop-pki"))


@pytest.fixture(scope="module")
def upstream_url(pki: Pki) -> Iterator[str]:
    with serving(upstream_args(pki, "--trust-clients", pki.maker_pem), UPSTREAM_READY) as up:
        yield up.url


@pytest.mark.parametrize("loop", LOOPS)
async def test_a_device_enrolls_through_a_gateway_on_each_loop(
    pki: Pki, upstream_url: str, loop: str
) -> None:
    need_loop(loop)
    args = gateway_args(pki, upstream_url, "--event-loop", loop)
    with serving(args, GATEWAY_READY) as gw:
        key = ec.generate_private_key(ec.SECP256R1())
        # the identity of the device's IDevID (make_pki), which the upstream CA holds it to
        subject = parse_name(f"serialNumber=device-1,CN=loop-{loop}")
        csr = build_csr(key, subject)
        async with EstClient(
            gw.url, trust=pki.ca_pem, cert=pki.device_cert, key=pki.device_key, timeout=20
        ) as device:
            issued = await device.enroll(csr)
        assert issued[0].subject == subject


@pytest.mark.parametrize("loop", LOOPS)
def test_the_ready_line_names_the_loop(pki: Pki, loop: str) -> None:
    need_loop(loop)
    # An upstream that is down: the gateway warns and serves anyway, naming its loop.
    args = gateway_args(pki, "https://127.0.0.1:9/.well-known/est", "--event-loop", loop)
    with serving(args, r"(gateway: serving EST-coaps on \S+ -> \S+ \(\w+\))") as gw:
        assert gw.url.endswith(f"({loop})")


def test_asking_for_uvloop_without_it_is_one_line(pki: Pki, tmp_path: Path) -> None:
    # A uvloop module that fails to import, as on a machine without the [fast] extra.
    (tmp_path / "uvloop.py").write_text("raise ImportError('no uvloop here')\n")
    done = subprocess.run(
        [*ESTCOAP, *map(str, gateway_args(pki, "https://127.0.0.1:9/", "--event-loop", "uvloop"))],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PYTHONPATH": f"{tmp_path}:{Path(__file__).resolve().parents[2]}", "PATH": "/usr/bin"},
    )
    assert done.returncode != 0
    assert "uvloop is not installed" in done.stderr and "Traceback" not in done.stderr


def test_loop_factory_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    assert loop_factory("asyncio") is None
    with pytest.raises(ValueError, match="unknown event loop"):
        loop_factory("trio")
    assert run(_answer(), "asyncio") == 42
    monkeypatch.setitem(__import__("sys").modules, "uvloop", None)  # import uvloop fails
    assert loop_factory("auto") is None  # falls back to asyncio's loop
    with pytest.raises(ValueError, match=r"estcoap\[fast\]"):
        loop_factory("uvloop")


async def _answer() -> int:
    return 42
