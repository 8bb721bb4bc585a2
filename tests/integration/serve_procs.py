"""Real `estcoap` processes (serve, gateway, proxy) for the runtime tests: started with the
CLI as a user types it, everything they say on stdout and stderr kept as it comes (a
reader thread each, so a chatty process never blocks on a full pipe), stopped for sure.

`running` yields once `ready` holds; `Running.urls` has the URL of each front from its
"serving EST..." line, and `Running.pids` the workers' from "N workers serving ... pids".
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.polling import wait_until

CLI = [sys.executable, "-m", "estcoap.cli"]
# "serving EST-coaps on URL", "gateway: serving EST-coaps on URL -> UPSTREAM (asyncio)", ...
# Workers share the pipe and a line can run into the next one ("...estserving EST-coaps on"):
# a URL also ends where "serving" or "serve:" begins.
_SERVING = re.compile(r"serving EST.*? on ((\w+)://\S+?)(?=\s|$|serv)")
# "serve: 2 workers serving (pids 4242, 4243)"
_PIDS = re.compile(r"workers serving \(pids ([\d, ]+)\)")


@dataclass
class Running:
    proc: subprocess.Popen[str]
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)  # its workers', when it has some

    def said(self, needle: str) -> bool:
        """Some line on stderr (the log) holds needle."""
        return any(needle in line for line in self.stderr)

    @property
    def urls(self) -> dict[str, str]:
        """The URL of each front by scheme ("coaps", "https"), from its serving line."""
        return {m[2]: m[1] for line in list(self.stdout) for m in _SERVING.finditer(line)}

    def workers_serving(self) -> bool:
        return any("workers serving" in line for line in self.stdout)


@contextlib.contextmanager
def running(
    *args: str | Path, ready: Callable[[Running], bool], what: str, timeout: float = 90
) -> Iterator[Running]:
    """`estcoap ARGS` until the block ends (then SIGKILL to it and its workers, if alive)."""
    proc = subprocess.Popen(
        [*CLI, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    served = Running(proc)
    out, err = proc.stdout, proc.stderr
    assert out is not None and err is not None
    readers = [
        threading.Thread(target=lambda: served.stdout.extend(iter(out.readline, "")), daemon=True),
        threading.Thread(target=lambda: served.stderr.extend(iter(err.readline, "")), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        wait_until(lambda: ready(served) or proc.poll() is not None, timeout, what)
        assert ready(served), "".join(served.stdout + served.stderr)
        for line in served.stdout:
            if pids := _PIDS.search(line):
                served.pids = [int(p) for p in pids[1].split(",")]
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)  # its workers are killed by the next lines
        proc.wait(30)
        for pid in served.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for reader in readers:
            reader.join(5)


def cli(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`estcoap ARGS`, which must succeed."""
    done = subprocess.run(
        [*CLI, *map(str, args)], input=stdin, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done


def init_ca(tmp_path: Path) -> Path:
    ca = tmp_path / "ca"
    cli("ca", "init", ca, "--hostname", "127.0.0.1")
    return ca


def issue_ra(ca: Path, where: Path) -> tuple[Path, Path]:
    """An RA certificate and key from the CA, for a gateway or proxy in front of it."""
    ra_cert, ra_key = where / "ra.pem", where / "ra.key"
    cli("ca", "issue-ra", ca, "--out-cert", ra_cert, "--out-key", ra_key)
    return ra_cert, ra_key


def relay_args(
    command: str, ca: Path, upstream: str, ra: tuple[Path, Path], *extra: str | Path
) -> list[str | Path]:
    """`gateway` (a CoAPs front) or `proxy` (an HTTPS front) in front of upstream, as the
    RA, with the CA's server certificate."""
    front = {"gateway": "--coaps", "proxy": "--https"}[command]
    return [
        command,
        front,
        "127.0.0.1:0",
        "--upstream",
        upstream,
        "--upstream-trust",
        ca / "ca.pem",
        "--ra-cert",
        ra[0],
        "--ra-key",
        ra[1],
        "--server-cert",
        ca / "server.pem",
        "--server-key",
        ca / "server.key",
        *extra,
    ]
