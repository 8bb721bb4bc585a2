"""Waits until a command a document started in the background is ready: every port it
listens on is bound, or (a client) its error log has a line starting with a given text.
Run by the script tests/docs/test_doc_blocks.py makes of a document:

    python doc_ready.py PID ERRLOG TIMEOUT [--tcp PORT]... [--udp PORT]... [--line TEXT]

Exits 0 when ready; 1, with the reason and the command's log, when the command ended
first or the time ran out."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

_TCP_LISTEN = "0A"


def bound_ports(kind: str) -> set[int]:
    """Local ports in /proc/net/{kind}{,6}: listening ones for tcp, any bound one for udp."""
    ports = set()
    for table in (f"/proc/net/{kind}", f"/proc/net/{kind}6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if kind == "tcp" and fields[3] != _TCP_LISTEN:
                continue
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("pid", type=int)
    parser.add_argument("errlog", type=Path)
    parser.add_argument("timeout", type=float)
    parser.add_argument("--tcp", type=int, action="append", default=[])
    parser.add_argument("--udp", type=int, action="append", default=[])
    parser.add_argument("--line")
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    while True:
        missing = set(args.tcp) - bound_ports("tcp") if args.tcp else set()
        missing |= set(args.udp) - bound_ports("udp") if args.udp else set()
        log = args.errlog.read_text(errors="replace") if args.errlog.exists() else ""
        said = args.line is None or any(line.startswith(args.line) for line in log.splitlines())
        if not missing and said:
            return 0
        if not running(args.pid):
            reason = "ended before it was ready"
        elif time.monotonic() > deadline:
            reason = f"not ready after {args.timeout:.0f} s"
        else:
            time.sleep(0.1)
            continue
        waited = f"ports {sorted(missing)} not bound" if missing else f"no line {args.line!r}"
        print(f"background command {reason} ({waited}); its stderr:\n{log}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
