"""Console sessions: a random 256-bit id in a cookie, held in memory, with a CSRF token.

A session ends when idle for `idle` seconds, `absolute` seconds after sign-in, or at sign
out; a restart of serve ends them all (they live in this process only). The table is
bounded: at `max_sessions` the oldest session makes room (signing in many times cannot
grow memory).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

IDLE_SECONDS = 15 * 60
ABSOLUTE_SECONDS = 8 * 3600
MAX_SESSIONS = 1000


@dataclass
class Session:
    id: str
    user: str
    created: float
    seen: float
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    flash: str | None = None  # what the last action did, shown once on the next page

    def csrf_ok(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.csrf.encode())


class Sessions:
    def __init__(
        self,
        *,
        idle: float = IDLE_SECONDS,
        absolute: float = ABSOLUTE_SECONDS,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle = idle
        self.absolute = absolute
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def create(self, user: str) -> Session:
        now = self._clock()
        session = Session(secrets.token_urlsafe(32), user, now, now)  # 256 random bits
        self._sessions[session.id] = session
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of this id (its idle clock restarted), else None."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if now - session.seen > self.idle or now - session.created > self.absolute:
            del self._sessions[session_id]
            return None
        session.seen = now
        return session

    def end(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def end_user(self, user: str) -> None:
        """Every session of a user (removed from the users file)."""
        for sid in [s.id for s in self._sessions.values() if s.user == user]:
            del self._sessions[sid]

    def __len__(self) -> int:
        return len(self._sessions)
