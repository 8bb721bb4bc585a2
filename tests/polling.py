"""Waiting for something that happens over real sockets or in another process: poll a
condition until it holds, bounded in time, and fail with what was awaited. (Waiting for
time itself to pass is not done this way: objects take a clock the test advances.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def wait_for(
    predicate: Callable[[], object], timeout: float = 5.0, what: str = "condition"
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not reached in {timeout} s")
        await asyncio.sleep(0.02)


def wait_until(
    predicate: Callable[[], object], timeout: float = 5.0, what: str = "condition"
) -> None:
    """wait_for for code outside an event loop (subprocesses, threads)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout} s")
        time.sleep(0.02)
