"""A one-line live progress bar, drawn only when the stream is a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

REDRAW_EVERY = 0.1  # seconds: at most ten redraws a second, however fast devices finish


class Progress:
    def __init__(self, total: int, *, stream: TextIO | None = None, enabled: bool | None = None):
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()
        self._drawn = 0.0

    def update(self, ok: bool) -> None:
        self.done += 1
        if not ok:
            self.failed += 1
        now = time.monotonic()
        if self.enabled and (now - self._drawn >= REDRAW_EVERY or self.done == self.total):
            self._drawn = now
            self.stream.write("\r" + self.line(now))
            self.stream.flush()

    def line(self, now: float | None = None, width: int = 30) -> str:
        elapsed = (now or time.monotonic()) - self.started
        filled = int(width * self.done / self.total) if self.total else width
        rate = (self.done - self.failed) / elapsed if elapsed > 0 else 0.0
        return (
            f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"
            f"  failed {self.failed}  {rate:.1f}/s  {elapsed:.0f} s"
        )

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
