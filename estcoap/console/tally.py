"""Requests answered by each front, counted per minute for the console's fleet page.

serve hands each front a hook (front(name)) beside the metrics one. Each answer is one of
three outcomes: done (2.xx/2xx), asked to wait (pending or try later: CoAP 5.03 with
Max-Age, which RFC 9148 uses for pending, or HTTP 202/503 with Retry-After), failed (any
other 4.xx/5.xx or 4xx/5xx). Counts are kept per minute for a day:
at most 1,440 minutes times the fronts, operations and two outcomes, whatever the load.
They live in this process: a restart starts them afresh (the store's issued rows do not).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

DAY_MINUTES = 24 * 60


OUTCOMES = ("done", "wait", "failed")
_WAIT = {"5.03", "202", "503"}


def outcome(code: str) -> str:
    if code in _WAIT:
        return "wait"
    return "failed" if code[:1] in ("4", "5") else "done"


class RequestTally:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counts: Counter[tuple[int, str, str, str]] = Counter()
        self._pruned = 0

    def front(self, name: str) -> _FrontHook:
        return _FrontHook(self, name)

    def add(self, front: str, operation: str, code: str) -> None:
        minute = int(self._clock() // 60)
        self._counts[(minute, front, operation, outcome(code))] += 1
        if minute != self._pruned:
            self._pruned = minute
            for key in [k for k in self._counts if k[0] <= minute - DAY_MINUTES]:
                del self._counts[key]

    def since(self, seconds: float) -> dict[tuple[str, str], Counter[str]]:
        """(front, operation) -> answers by outcome over the last `seconds`."""
        first = int((self._clock() - seconds) // 60)
        out: dict[tuple[str, str], Counter[str]] = {}
        for (minute, front, operation, result), n in self._counts.items():
            if minute > first:
                out.setdefault((front, operation), Counter())[result] += n
        return out


class _FrontHook:
    """A request hook (estcoap.observe.hooks.RequestHook) counting into the tally."""

    def __init__(self, tally: RequestTally, front: str) -> None:
        self._tally = tally
        self._front = front

    def request_done(self, operation: str, code: str, seconds: float, **_: Any) -> None:
        self._tally.add(self._front, operation, code)


class BothHooks:
    """Two request hooks as one: the metrics' and the console's."""

    def __init__(self, first: Any, second: Any) -> None:
        self._hooks = (first, second)

    def request_done(self, operation: str, code: str, seconds: float, **kw: Any) -> None:
        for hook in self._hooks:
            hook.request_done(operation, code, seconds, **kw)
