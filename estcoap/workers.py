"""`--workers N` for serve, gateway and proxy: a parent that forks N worker processes.

Python runs one request at a time per process; a host's cores are used by processes.
The parent binds nothing (it only checks each address can be bound, and turns a port 0
into a free port so that every worker binds the same one). Each worker builds its own
service and fronts, like a single-process command, on sockets with SO_REUSEPORT: Linux
hashes each UDP datagram and each new TCP connection to one socket of the port's group by
the peer's address and port, so a DTLS association's records all reach the worker that
made it, and an HTTPS connection stays where it was accepted.

* The DTLS cookie secret is common to all workers (estcoap.dtls.cookie.share_secret):
  a HelloVerifyRequest sent by one is accepted by any other.
* Listeners that must exist once (the console, the CRL and OCSP listeners) run in worker
  0 only. --metrics is per worker: worker i listens on the given port + i (its own
  counters and health; sum them in Prometheus), since prometheus_client's multiprocess
  mode cannot serve the gauges (sessions, pending) that each worker holds in memory.
* A worker that dies is started again after a back-off (0.5 s doubling to 30 s while it
  keeps dying young), the others serve meanwhile. A worker that cannot start the first
  time (a bad option, a port in use) stops them all: the command fails as one process would.
* SIGTERM or SIGINT to the parent: forwarded to every worker, which drains (estcoap.runtime);
  the parent waits --drain-timeout plus a margin, kills what is left, and exits 0 when every
  worker exited 0. SIGHUP is forwarded to every worker that serves, each reloads its own
  settings (one still starting reads them all anyway).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import logging
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("estcoap.workers")

FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
# A worker that served this long before it died is restarted at once (its back-off resets).
HEALTHY_AFTER = 30.0
# After --drain-timeout, what a worker may still take to close its sessions and store.
DRAIN_MARGIN = 5.0
COOKIE_SECRET_FILE = "dtls-cookie.key"

# This process's worker index; None in a single-process command and in the parent.
index: int | None = None
_ready_fd: int | None = None


def count(text: str) -> int:
    """--workers: a number of processes, or 'auto' for the number of cores."""
    if text == "auto":
        return (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else (os.cpu_count() or 1)
        )
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError(f"expected a number from 1 to 256 or 'auto', got {text!r}")
    return value


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=count,
        default=1,
        metavar="N",
        help="serve with N processes sharing the ports (SO_REUSEPORT; 'auto': one per core); "
        "the console, CRL and OCSP listeners run in the first, --metrics PORT is PORT+i in "
        "worker i (docs/scaling.md)",
    )


def ready() -> None:
    """Called by a command once its fronts serve: tells the parent this worker is up."""
    global _ready_fd
    if _ready_fd is not None:
        with contextlib.suppress(OSError):
            os.write(_ready_fd, b"r")
            os.close(_ready_fd)
        _ready_fd = None


# ---- what the parent checks and resolves before forking -------------------------------


def claim_port(host: str, port: int, kind: int) -> int:
    """Check host:port can be bound by a SO_REUSEPORT group (OSError if not); returns the
    port, a free one for 0. The probe is closed at once: a bound UDP socket of the group
    would be handed peers' datagrams that nobody reads."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_STREAM:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        return int(probe.getsockname()[1])


def with_port(text: str, port: int) -> str:
    host = text.rpartition(":")[0]
    return f"{host}:{port}"


def cookie_secret(ca_dir: str | Path) -> bytes:
    """The DTLS cookie secret kept in the CA directory (made once, 0600): every worker and
    every host serving this CA accepts the cookies the others make. A directory that cannot
    be written gives a secret of this start only (cookies are then per host)."""
    path = Path(ca_dir) / COOKIE_SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM, errno.ENOENT):
            return os.urandom(32)
        raise
    secret = os.urandom(32)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secret)
    return secret


def _read_secret(path: Path) -> bytes:
    from .ca.paths import require_private

    require_private(path)
    secret = path.read_bytes()
    if len(secret) < 16:
        raise ValueError(f"{path}: too short for a cookie secret (remove it to make one)")
    return secret


# ---- the worker side ---------------------------------------------------------------


class _WorkerTag(logging.Filter):
    """Names the worker in each line: 'worker 1 pid 4242: ...' (and keys in JSON lines)."""

    def __init__(self, number: int) -> None:
        super().__init__()
        self.prefix = f"worker {number} pid {os.getpid()}: "
        self.fields = {"worker": number, "pid": os.getpid()}

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "_worker_tagged", False):  # one tag with several handlers
            record._worker_tagged = True
            record.msg = self.prefix + str(record.msg)
            fields = getattr(record, "fields", None)
            if isinstance(fields, dict):
                record.fields = {**fields, **self.fields}
        return True


def _become_worker(number: int, secret: bytes, ready_fd: int) -> None:
    global index, _ready_fd
    index, _ready_fd = number, ready_fd
    os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the parent, which forwards it once
    signal.set_wakeup_fd(-1)  # the parent's: its fd number is closed here and may be reused
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the runtime takes it: not fatal
    from .dtls import cookie
    from .dtls import server as dtls_server
    from .https import server as https_server

    dtls_server.reuse_port = True
    https_server.reuse_port = True  # the PSK transport (aiocoap's) sets it on Linux itself
    cookie.share_secret(secret)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerTag(number))


def _worker_main(command: str, number: int, run: Callable[[int], int]) -> int:
    try:
        return int(run(number) or 0)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        status = getattr(exc, "exit_status", None)  # a CliError: its one line
        if isinstance(status, int):
            print(f"estcoap {command}: worker {number}: {exc}", file=sys.stderr)
            return status
        if isinstance(exc, OSError):
            print(f"estcoap {command}: worker {number}: {exc}", file=sys.stderr)
            return 1
        traceback.print_exc()
        return 1


# ---- the parent ----------------------------------------------------------------------


@dataclasses.dataclass
class _Worker:
    number: int
    pid: int = 0
    ready_fd: int = -1
    started: float = 0.0
    ever_ready: bool = False  # this slot served once: a later death is restarted
    up: bool = False
    failures: int = 0
    restart_at: float | None = None


class Supervisor:
    def __init__(
        self,
        command: str,
        workers: int,
        run: Callable[[int], int],
        *,
        drain_timeout: float,
        secret: bytes | None = None,
    ) -> None:
        self.command = command
        self.run = run
        self.drain_timeout = drain_timeout
        self.secret = secret or os.urandom(32)
        self.workers = [_Worker(i) for i in range(workers)]
        self._stops = self._stops_forwarded = 0
        self._reloads = self._reloads_forwarded = 0
        self._deadline: float | None = None  # set when stopping: workers are killed after it
        self._status = 0  # the command's: 1 once a worker did not end cleanly
        self._wake_r, self._wake_w = os.pipe()

    # signals only set counters; the loop acts on them
    def _on_stop(self, signum: int, frame: object) -> None:
        self._stops += 1

    def _on_reload(self, signum: int, frame: object) -> None:
        self._reloads += 1

    def _start(self, worker: _Worker) -> None:
        read_fd, write_fd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                os.close(read_fd)
                os.close(self._wake_r)
                os.close(self._wake_w)
                _become_worker(worker.number, self.secret, write_fd)
                status = _worker_main(self.command, worker.number, self.run)
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(status)
        os.close(write_fd)
        worker.pid, worker.ready_fd, worker.started = pid, read_fd, time.monotonic()
        worker.up, worker.restart_at = False, None
        log.info("worker %d started (pid %d)", worker.number, pid)

    def supervise(self) -> int:
        """Run the workers until a stop signal; the command's exit status."""
        handlers = {
            signal.SIGTERM: signal.signal(signal.SIGTERM, self._on_stop),
            signal.SIGINT: signal.signal(signal.SIGINT, self._on_stop),
            signal.SIGHUP: signal.signal(signal.SIGHUP, self._on_reload),
        }
        os.set_blocking(self._wake_w, False)
        old_wakeup = signal.set_wakeup_fd(self._wake_w)
        try:
            return self._loop()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            for worker in self.workers:
                if worker.pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(worker.pid, signal.SIGKILL)
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(worker.pid, 0)
                    worker.pid = 0

    def _loop(self) -> int:
        for worker in self.workers:
            self._start(worker)
        announced = False
        while True:
            self._forward_signals()
            if self._deadline is not None:
                if not self._alive():
                    return self._status
                if time.monotonic() >= self._deadline:
                    log.warning("stopping: workers still running after the drain are killed")
                    self._signal_all(signal.SIGKILL)
                    self._deadline = time.monotonic() + 5.0
                    self._status = 1
            else:
                self._restart_due()
            if not announced and all(w.up for w in self.workers):
                announced = True
                pids = ", ".join(str(w.pid) for w in self.workers)
                print(
                    f"{self.command}: {len(self.workers)} workers serving (pids {pids})", flush=True
                )
            self._wait(0.2)
            for worker, pid, status in self._reap():
                self._ended(worker, pid, status)

    def _forward_signals(self) -> None:
        if self._stops > self._stops_forwarded:
            if self._deadline is None:
                self._stop_all()
                log.info("stopping: SIGTERM to %d workers", self._alive())
            else:  # a second one: the workers stop waiting for what is in flight
                self._signal_all(signal.SIGTERM)
            self._stops_forwarded = self._stops
        if self._reloads > self._reloads_forwarded and self._deadline is None:
            self._reloads_forwarded = self._reloads
            # Only to workers that serve: one still starting reads every file anyway.
            up = [w for w in self.workers if w.up]
            log.info("reload: SIGHUP to %d workers", len(up))
            self._signal_all(signal.SIGHUP, up)

    def _stop_all(self) -> None:
        self._deadline = time.monotonic() + self.drain_timeout + DRAIN_MARGIN
        self._signal_all(signal.SIGTERM)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if worker.pid == 0 and worker.restart_at is not None and now >= worker.restart_at:
                self._start(worker)

    def _ended(self, worker: _Worker, pid: int, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        if self._deadline is not None:  # stopping: a worker ends with 0, or by the SIGTERM
            if code not in (0, -signal.SIGTERM):  # that came before its handler did
                self._status = 1
            return
        if not worker.ever_ready:  # could not start at all: the command fails as one would
            log.error("worker %d could not start (%s)", worker.number, _how(status))
            self._status = code if code > 0 else 1
            self._stop_all()
            return
        lived = time.monotonic() - worker.started
        worker.failures = 0 if lived >= HEALTHY_AFTER else worker.failures + 1
        backoff = 0.0 if worker.failures == 0 else _backoff(worker.failures)
        worker.restart_at = time.monotonic() + backoff
        log.warning(
            "worker %d (pid %d) %s; starting it again in %.1f s",
            worker.number,
            pid,
            _how(status),
            backoff,
        )

    def _alive(self) -> int:
        return sum(1 for w in self.workers if w.pid)

    def _signal_all(self, sig: int, workers: list[_Worker] | None = None) -> None:
        for worker in self.workers if workers is None else workers:
            if worker.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, sig)

    def _wait(self, timeout: float) -> None:
        """Sleep until a worker says it is ready, a signal comes, or timeout."""
        fds = [w.ready_fd for w in self.workers if w.ready_fd >= 0]
        try:
            readable, _, _ = select.select([self._wake_r, *fds], [], [], timeout)
        except InterruptedError:
            return
        for fd in readable:
            if fd == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 512)
                continue
            worker = next(w for w in self.workers if w.ready_fd == fd)
            data = os.read(fd, 16)
            os.close(fd)
            worker.ready_fd = -1
            if data:
                worker.up = worker.ever_ready = True
                log.info("worker %d (pid %d) serving", worker.number, worker.pid)

    def _reap(self) -> list[tuple[_Worker, int, int]]:
        """The workers that ended since the last look: (worker, its pid, wait status)."""
        gone = []
        for worker in self.workers:
            if not worker.pid:
                continue
            try:
                pid, status = os.waitpid(worker.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = worker.pid, 0
            if pid:
                if worker.ready_fd >= 0:
                    os.close(worker.ready_fd)
                    worker.ready_fd = -1
                worker.up = False
                gone.append((worker, worker.pid, status))
                worker.pid = 0
        return gone


def _backoff(failures: int) -> float:
    """0.5 s after the first quick death in a row, doubling up to MAX_BACKOFF."""
    return float(min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (failures - 1)))


def _how(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"killed by signal {-code} ({signal.Signals(-code).name})"
    return f"exited with status {code}"


def serve(
    command: str,
    workers: int,
    run: Callable[[int], int],
    *,
    drain_timeout: float,
    secret: bytes | None = None,
) -> int:
    """Run run(i) in workers processes i = 0..workers-1 under a Supervisor."""
    return Supervisor(command, workers, run, drain_timeout=drain_timeout, secret=secret).supervise()
