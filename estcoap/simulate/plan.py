"""What a Fleet runs, beyond its settings: which devices, with which credentials, when.

The default plan is today's first-enrollment wave: every index of the fleet, a fresh
key and IDevID from the maker for each, as fast as the concurrency allows. A plan can
instead take IDevIDs from a --keys-dir (made once, reused), run only some indices (one
process's share, or one half of a coaps/https mix), re-enroll devices with the LDevID
a previous run saved (a renewal storm), keep the certificates the devices obtain, and
start devices at a fixed rate rather than as soon as a worker is free.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from .keys import Credential

DEFAULT_SUBJECT = "serialNumber={serial},CN={serial}"


@dataclass(frozen=True)
class Plan:
    indices: Iterable[int] | None = None  # None: range(settings.devices)
    idevid: Callable[[int], Credential] | None = None  # None: a fresh one from the maker
    ldevid: Callable[[int], Credential | None] | None = None  # set: a renewal storm (sren)
    on_enrolled: Callable[[int, Credential], None] | None = None
    pace: Callable[[], Awaitable[float]] | None = None  # waits for the next start slot
    subject: str = DEFAULT_SUBJECT  # {serial} is the device's IDevID serialNumber
    single_certificate: bool = False  # coaps: ask for 287 (the certificate alone), not 281


class Pacer:
    """Start slots at a fixed rate from `origin` (monotonic): slot k is at origin + k/rate.

    Workers ask for the next slot in turn; a worker that asks after its slot has passed
    (every worker was busy) starts late, and the lateness, returned in seconds, is what
    tells a rate the simulator or the server could not sustain."""

    def __init__(self, rate: float, origin: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.origin = origin
        self.slot = 0

    async def __call__(self) -> float:
        due = self.origin + self.slot / self.rate
        self.slot += 1
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
            return 0.0
        return -wait


def subject_for(template: str, serial: str) -> str:
    return template.format(serial=serial)
