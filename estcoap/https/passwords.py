"""Password checks off the event loop: scrypt in a small, bounded worker pool.

One scrypt run takes ~35 ms of CPU. Run on the event loop, a few connections of wrong
guesses stall every HTTPS and CoAPs peer the loop serves; so checks run in worker
threads (hashlib.scrypt releases the GIL while it works). The pool is small, to leave
cores to the loop, and its backlog is bounded: when it is full a new check is refused
at once (PasswordCheckBusy -> 503 + Retry-After) rather than queued without end.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from .users import User, dummy_scrypt_hash, scrypt_verify


class PasswordCheckBusy(Exception):
    """Too many password checks already waiting: ask the client to come back later."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("too many password checks in progress; retry later")
        self.retry_after = retry_after


def default_workers() -> int:
    """Half the cores (at least one): the other half stays with the event loop."""
    return max(1, (os.cpu_count() or 2) // 2)


class PasswordChecker:
    def __init__(
        self,
        users: Iterable[User],
        *,
        workers: int | None = None,
        max_backlog: int | None = None,
        retry_after: int = 1,
    ) -> None:
        self.workers = workers or default_workers()
        # Running plus waiting checks; at 35 ms each, 8 per worker is ~0.3 s of waiting.
        self.max_backlog = max_backlog or 8 * self.workers
        self.retry_after = retry_after
        hashes = [u.scrypt_hash for u in users if u.scrypt_hash]
        self._dummy = dummy_scrypt_hash(hashes[0] if hashes else None)
        self._executor: ThreadPoolExecutor | None = None
        self._backlog = 0
        # Counters a metrics exporter can read.
        self.kdf_runs = 0  # checks handed to the pool (each is exactly one scrypt run)
        self.busy_refusals = 0  # checks refused because the backlog was full

    @property
    def backlog(self) -> int:
        return self._backlog

    async def check(self, user: User | None, password: str) -> bool:
        """True when `password` is `user`'s; an unknown user (None) costs the same and fails."""
        if self._backlog >= self.max_backlog:
            self.busy_refusals += 1
            raise PasswordCheckBusy(self.retry_after)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="estcoap-kdf")
        self._backlog += 1
        self.kdf_runs += 1
        run = asyncio.get_running_loop().run_in_executor(
            self._executor, self._verify, user, password
        )
        # The backlog shrinks when the thread is done, not when a waiter gives up: a client
        # that hangs up does not free a slot its scrypt run still occupies.
        run.add_done_callback(self._done)
        return await asyncio.shield(run)

    def _done(self, _: object) -> None:
        self._backlog -= 1

    def _verify(self, user: User | None, password: str) -> bool:
        if user is None:
            scrypt_verify(self._dummy, password)
            return False
        return user.check_password(password, dummy_hash=self._dummy)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
