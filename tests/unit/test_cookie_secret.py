"""DTLS cookies of several processes (estcoap.dtls.cookie): jars with one secret accept
each other's cookies, across a rotation too; another secret, another peer or an old period
is refused; the CA directory's secret file is made once, 0600, and a widened one refused."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from estcoap import workers
from estcoap.ca.paths import ExposedFileError
from estcoap.dtls.cookie import CookieJar

PEER = ("127.0.0.1", 40000)
RANDOM = bytes(range(32))


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_cookie_made_by_one_worker_is_accepted_by_another_with_the_secret() -> None:
    secret = os.urandom(32)
    clock = Clock(1_000_000.0)
    worker_a = CookieJar(secret=secret, clock=clock)
    worker_b = CookieJar(secret=secret, clock=clock)
    cookie = worker_a.make(PEER, RANDOM)
    assert worker_b.verify(PEER, RANDOM, cookie)
    # ... not from another address or port, nor for another ClientHello
    assert not worker_b.verify(("127.0.0.1", 40001), RANDOM, cookie)
    assert not worker_b.verify(PEER, bytes(32), cookie)
    # a jar of another secret (another CA's server) refuses it
    assert not CookieJar(secret=os.urandom(32), clock=clock).verify(PEER, RANDOM, cookie)


def test_the_workers_rotate_together_and_keep_one_previous_period() -> None:
    secret = os.urandom(32)
    clock = Clock(3000.0)
    maker = CookieJar(rotate_after=300, secret=secret, clock=clock)
    checker = CookieJar(rotate_after=300, secret=secret, clock=clock)
    cookie = maker.make(PEER, RANDOM)
    clock.now += 300  # the next period: the previous one's cookies still pass
    assert checker.verify(PEER, RANDOM, cookie)
    assert maker.make(PEER, RANDOM) != cookie  # a new key made the same way in both
    assert checker.verify(PEER, RANDOM, maker.make(PEER, RANDOM))
    clock.now += 300  # two periods on: refused
    assert not checker.verify(PEER, RANDOM, cookie)


def test_the_cookie_secret_file_is_made_once_private(tmp_path: Path) -> None:
    first = workers.cookie_secret(tmp_path)
    path = tmp_path / workers.COOKIE_SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 32
    assert workers.cookie_secret(tmp_path) == first  # every worker and host reads the same
    path.chmod(0o644)
    with pytest.raises(ExposedFileError, match="chmod 600"):
        workers.cookie_secret(tmp_path)


def test_workers_option_takes_a_number_or_auto() -> None:
    assert workers.count("3") == 3
    assert workers.count("auto") == len(os.sched_getaffinity(0))
    for bad in ("0", "-1", "x", "1000"):
        with pytest.raises(Exception, match="from 1 to 256 or 'auto'"):
            workers.count(bad)
