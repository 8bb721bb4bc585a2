"""`estcoap serve` beside a bench, started one way for every bench that measures it.

start_serve runs it on loopback with each front on a port it picks itself (a port chosen
here could be taken meanwhile on a shared machine), reads the URL of each front from the
lines it prints when ready, and gives back a Served that knows them and stops it.
cpu_seconds reads a process's CPU time (or one thread's) from /proc.

The benches run as scripts (`python3 bench/NAME.py`), so this module is found beside them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")
CLI = (sys.executable, "-m", "estcoap.cli")
# "serving EST over HTTPS on URL", "serving EST-coaps on URL", "... with PSK DTLS on URL"
_READY = re.compile(r"^serving EST.* on ((\w+)://\S+)$")


def environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment as it is now (a bench may have set a variable), with the
    checkout's estcoap first on the path, whether or not it is installed."""
    return {**os.environ, "PYTHONPATH": str(ROOT), **(extra or {})}


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """utime + stime of a process (all its threads), or of one of its threads."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass
class Served:
    proc: subprocess.Popen[str]
    urls: dict[str, str]  # by scheme: "coaps", "https"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        """The URL of its only front."""
        (only,) = self.urls.values()
        return only

    @property
    def port(self) -> int:
        """The port of its only front."""
        return int(re.search(r":(\d+)/", self.url)[1])  # type: ignore[index]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_serve(
    ca_dir: Path,
    fronts: Sequence[str] = ("coaps",),
    extra: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    stderr: int | IO[str] | None = None,
    cli: Sequence[str] = CLI,
) -> Served:
    """`serve --ca CA_DIR --FRONT 127.0.0.1:0 ... EXTRA`, once every front says it serves.
    fronts: "coaps", "https", "coaps-psk". env: added to environment(). stderr: where serve's goes
    (default: this process's). cli: the command that runs the CLI (a bench may profile it)."""
    argv = [*cli, "serve", "--ca", str(ca_dir)]
    for front in fronts:
        argv += [f"--{front}", "127.0.0.1:0"]
    proc = subprocess.Popen(
        [*argv, *extra],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=environment(env),
        cwd=ROOT,
    )
    assert proc.stdout is not None
    urls: dict[str, str] = {}
    for _ in fronts:  # one line each, when it is bound
        line = proc.stdout.readline()
        ready = _READY.match(line.strip())
        if ready is None:
            proc.kill()
            proc.wait()
            raise SystemExit(f"serve did not start: {line.strip() or 'it ended'}")
        urls[ready[2]] = ready[1]
    return Served(proc, urls)
