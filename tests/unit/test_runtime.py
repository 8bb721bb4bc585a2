"""estcoap.runtime's own rules: a reload item that fails keeps its old settings and the others
still reload; the drain is bounded, and a second stop cuts it short. The signal paths of the
real commands are tests/integration/test_runtime_signals.py."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from estcoap import runtime as rt


def read_text(path: str) -> str:
    return Path(path).read_text()


class BusyFront:
    """A front whose request never finishes."""

    def __init__(self) -> None:
        self.accepting = True
        self.closed_with: float | None = None

    def stop_accepting(self) -> None:
        self.accepting = False

    def in_flight(self) -> int:
        return 1

    async def close(self, timeout: float) -> None:
        self.closed_with = timeout


def test_a_failing_item_keeps_its_settings_and_the_others_reload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = rt.Runtime("serve")
    applied: list[str] = []
    path = tmp_path / "policy.toml"
    path.write_text("first")

    def broken() -> str | None:
        raise ValueError("x.pem: bad\nmore")

    runtime.reloadable("broken", broken)
    runtime.reloadable("policy", rt.from_file(str(path), read_text, applied.append))
    with caplog.at_level(logging.INFO, logger="estcoap.runtime"):
        assert runtime.reload() == ["reload: broken not reloaded, the old ones stay: x.pem: bad"]
        assert applied == []  # the policy file did not change
        path.write_text("second")
        said = runtime.reload()
    assert said[1] == f"reload: policy {path} read again" and applied == ["second"]
    assert [r.levelname for r in caplog.records] == ["ERROR", "ERROR", "INFO"]


def test_nothing_changed_is_said(caplog: pytest.LogCaptureFixture) -> None:
    runtime = rt.Runtime("proxy")
    runtime.reloadable("users", lambda: None)
    with caplog.at_level(logging.INFO, logger="estcoap.runtime"):
        assert runtime.reload() == []
    assert caplog.messages == ["reload: nothing changed"]


def test_a_second_stop_cuts_the_drain_short() -> None:
    async def scenario() -> BusyFront:
        runtime = rt.Runtime("serve", drain_timeout=3600)
        front = BusyFront()
        runtime.add_front(front)
        closed: list[bool] = []
        runtime.after_fronts(lambda: closed.append(True))
        runtime.stop()
        draining = asyncio.create_task(runtime.drain())
        await asyncio.sleep(0.2)
        assert not draining.done() and not front.accepting  # waiting for the busy request
        runtime.stop()
        await asyncio.wait_for(draining, 60)  # an hour's drain, ended by the second stop
        assert closed == [True]
        return front

    front = asyncio.run(scenario())
    assert front.closed_with is not None and front.closed_with > 0


def test_the_drain_ends_at_its_timeout_and_says_what_it_cut_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> BusyFront:
        runtime = rt.Runtime("gateway", drain_timeout=0.2)
        front = BusyFront()
        runtime.add_front(front)
        await asyncio.wait_for(runtime.drain(), 60)
        return front

    with caplog.at_level(logging.INFO, logger="estcoap.runtime"):
        front = asyncio.run(scenario())
    assert front.closed_with == 0.0
    assert "1 exchanges still in flight after 0.2 s are cut off" in caplog.text
