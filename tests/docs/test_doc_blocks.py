"""Every shell block of README.md and docs/*.md runs as written, so a document that drifts
from the code fails here.

Each document's ```sh (or bash, shell) blocks run in order, as one bash script under
`set -euo pipefail`, in a temporary directory of their own (with bench/ and examples/
linked in), against real servers on loopback: `estcoap` and `python3` are this test's
interpreter. How the script differs from what a reader types, and why:

* A command ending in `&` (a server, or a client that waits for an operator) runs in
  the background with its output in log files, and the next command starts once it is
  ready: every port it serves (`--coaps`, `--https`) is bound, or for a client
  (enroll, reenroll, serverkeygen) once it has said on stderr that it waits
  ("pending: ..."). Everything a document started is stopped when it ends.
* The fixed loopback ports of the documents (127.0.0.1:8443 ...) are mapped, the same
  way throughout one document, to ports free on this machine, so that the run does not
  depend on what else listens here; 0.0.0.0 becomes 127.0.0.1.

A block that cannot run here is marked in its document by a comment on the line before
it, `<!-- not-run: REASON -->`, and must be listed in NOT_RUN below as well, so that
marking one is a visible change to this test.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"sh", "bash", "shell"}
READY_HELPER = Path(__file__).with_name("doc_ready.py")

# (document, first command of the block): the blocks marked not-run, each with its reason
# in the document.
NOT_RUN = {
    ("README.md", "./scripts/demo"),
    ("docs/gateway.md", "python3 bench/gateway.py"),
    (
        "docs/security.md",
        "ESTCOAP_FUZZ_SECONDS=300 python3 -m pytest -q tests/integration/test_coap_fuzz.py",
    ),
    ("docs/simulate.md", "estcoap simulate URL --trust PEM --maker-cert PEM --maker-key KEY \\"),
    (
        "docs/scaling.md",
        "estcoap ca init ./ca --hostname est.example.net --store postgresql://est@db.example.net/est",
    ),
}

DOCUMENT_TIMEOUT = 300  # seconds; a document takes a few to a few tens of seconds
READY_TIMEOUT = 60  # seconds for one background command to get ready
WAITING_CLIENTS = {"enroll", "reenroll", "serverkeygen"}

_FENCE = re.compile(r"^```(\S*)\s*$")
_NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(?P<reason>\S.*?)\s*-->\s*$")
_LOOPBACK_PORT = re.compile(r"(?P<host>127\.0\.0\.1|localhost|0\.0\.0\.0|\[::1\]):(?P<port>\d+)\b")
_BACKGROUND = re.compile(r"^(?P<command>.*[^&\s])\s*(?<!&)&\s*(?:#.*)?$")
_SERVES = re.compile(r"--(?P<front>coaps-psk|coaps|https)[ =](?:\S*:)?(?P<port>\d+)\b")


@dataclass(frozen=True)
class Block:
    document: str  # relative to the repository
    line: int  # of the block's first line
    text: str
    not_run: str | None  # the marker's reason

    @property
    def first_command(self) -> str:
        """The first line without its comment: how NOT_RUN names the block."""
        first = self.text.splitlines()[0] if self.text else ""
        return " ".join(first.split(" #", 1)[0].split())


def shell_blocks(path: Path) -> list[Block]:
    """The shell blocks of a Markdown file, in order."""
    name = path.relative_to(ROOT).as_posix()
    lines = path.read_text().splitlines()
    blocks, index = [], 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        if fence.group(1) in SHELL_LANGUAGES:
            before = next((line for line in reversed(lines[:index]) if line.strip()), "")
            marker = _NOT_RUN.match(before.strip())
            text = "\n".join(lines[index + 1 : end])
            blocks.append(Block(name, index + 2, text, marker.group("reason") if marker else None))
        index = end + 1
    return blocks


def logical_commands(block: Block) -> list[tuple[int, str]]:
    """(document line, command) with backslash continuations joined; comments and blank
    lines are kept as commands of their own, so line numbers stay right."""
    commands: list[tuple[int, str]] = []
    pending: list[str] = []
    start = block.line
    for offset, line in enumerate(block.text.splitlines()):
        if not pending:
            start = block.line + offset
        if line.endswith("\\") and not line.lstrip().startswith("#"):
            pending.append(line[:-1])
            continue
        pending.append(line)
        commands.append((start, " ".join(part.strip() for part in pending)))
        pending = []
    if pending:
        commands.append((start, " ".join(part.strip() for part in pending)))
    return commands


def free_ports(count: int) -> list[int]:
    """Ports free for both TCP and UDP on 127.0.0.1 (a coaps and an https front may share
    a number)."""
    held: list[socket.socket] = []
    ports: list[int] = []
    while len(ports) < count:
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.bind(("127.0.0.1", 0))
        port = tcp.getsockname()[1]
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.bind(("127.0.0.1", port))
        except OSError:
            tcp.close()
            udp.close()
            continue
        held += [tcp, udp]
        ports.append(port)
    for sock in held:
        sock.close()
    return ports


def port_map(blocks: list[Block]) -> dict[str, int]:
    found = sorted({m.group("port") for b in blocks for m in _LOOPBACK_PORT.finditer(b.text)})
    return dict(zip(found, free_ports(len(found)), strict=True))


def relocate(text: str, ports: dict[str, int]) -> str:
    def move(match: re.Match[str]) -> str:
        host = "127.0.0.1" if match.group("host") == "0.0.0.0" else match.group("host")
        return f"{host}:{ports[match.group('port')]}"

    return _LOOPBACK_PORT.sub(move, text)


def background(command: str, number: int, where: str) -> str:
    """The command started in the background with its output in logs, then a wait until
    it is ready."""
    waits = []
    for serves in _SERVES.finditer(command):
        if serves.group("port") != "0":
            protocol = "udp" if serves.group("front").startswith("coaps") else "tcp"
            waits.append(f"--{protocol} {serves.group('port')}")
    words = command.split()
    if not waits and len(words) > 1 and words[0] == "estcoap" and words[1] in WAITING_CLIENTS:
        waits.append("--line pending:")
    if not waits:
        raise AssertionError(f"{where}: the docs test does not know when this is ready: {command}")
    log = f'"$DOCS_LOGS/bg-{number}"'
    return (
        f"{command} >{log}.out 2>{log}.err & "
        f'"$DOCS_PYTHON" "$DOCS_READY" $! {log}.err {READY_TIMEOUT} {" ".join(waits)}'
    )


def document_script(blocks: list[Block]) -> tuple[str, dict[int, str]]:
    """The bash script that runs the blocks, and which document line each script line is."""
    lines = [
        "set -euo pipefail",
        "trap 'echo \"docs test: script line $LINENO failed (exit $?)\" >&2' ERR",
    ]
    origin: dict[int, str] = {}
    ports = port_map([b for b in blocks if b.not_run is None])
    number = 0
    for block in blocks:
        if block.not_run is not None:
            continue
        lines.append(f'echo "### {block.document}:{block.line} (at $SECONDS s)"')
        for doc_line, command in logical_commands(block):
            where = f"{block.document}:{doc_line}"
            command = relocate(command, ports)
            started = _BACKGROUND.match(command)
            if started and not command.lstrip().startswith("#"):
                number += 1
                command = background(started.group("command"), number, where)
            lines.append(command)
            origin[len(lines)] = f"{where}: {command}"
    return "\n".join(lines) + "\n", origin


def shims(directory: Path) -> Path:
    """`estcoap`, `python3` and `python` as this interpreter, first on PATH."""
    directory.mkdir()
    for name, target in (
        ("estcoap", f'exec "{sys.executable}" -m estcoap.cli "$@"'),
        ("python3", f'exec "{sys.executable}" "$@"'),
        ("python", f'exec "{sys.executable}" "$@"'),
    ):
        shim = directory / name
        shim.write_text(f"#!/bin/sh\n{target}\n")
        shim.chmod(0o755)
    return directory


def stop_group(pgid: int) -> None:
    """SIGTERM to whatever the document left running (its servers), SIGKILL after 15 s."""
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def run_document(path: Path, workdir: Path) -> tuple[int, str, dict[int, str]]:
    blocks = shell_blocks(path)
    script, origin = document_script(blocks)
    (workdir / "logs").mkdir()
    run_dir = workdir / "run"
    run_dir.mkdir()
    for shared in ("bench", "examples"):
        (run_dir / shared).symlink_to(ROOT / shared)
    env = dict(os.environ)
    env.update(
        PATH=f"{shims(workdir / 'bin')}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(ROOT),
        DOCS_PYTHON=sys.executable,
        DOCS_READY=str(READY_HELPER),
        DOCS_LOGS=str(workdir / "logs"),
    )
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=run_dir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=DOCUMENT_TIMEOUT)
    except subprocess.TimeoutExpired:
        stop_group(proc.pid)
        output, _ = proc.communicate()
        output += f"\ndocs test: stopped after {DOCUMENT_TIMEOUT} s"
    finally:
        stop_group(proc.pid)
    for log in sorted((workdir / "logs").iterdir()):
        output += f"\n--- {log.name}:\n{log.read_text(errors='replace')}"
    return proc.returncode, output, origin


def failed_at(output: str, origin: dict[int, str]) -> str:
    found = re.findall(r"docs test: script line (\d+) failed", output)
    return origin.get(int(found[-1]), "?") if found else "?"


@pytest.mark.timeout(DOCUMENT_TIMEOUT + 60)
@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_shell_block_runs_as_written(path: Path, tmp_path: Path) -> None:
    returncode, output, origin = run_document(path, tmp_path)
    assert returncode == 0, f"failed at {failed_at(output, origin)}\n{output}"


def test_blocks_not_run_are_the_listed_ones() -> None:
    marked = {
        (b.document, b.first_command): b.not_run
        for path in DOCUMENTS
        for b in shell_blocks(path)
        if b.not_run is not None
    }
    assert set(marked) == NOT_RUN, "a not-run marker was added or removed: update NOT_RUN"


def test_the_walkthrough_is_found() -> None:
    """A parser that found nothing would pass every document."""
    blocks = [b for b in shell_blocks(ROOT / "README.md") if b.not_run is None]
    assert any("estcoap ca init" in b.text for b in blocks)
    assert any("estcoap serve" in b.text for b in blocks)


_INLINE_COMMAND = re.compile(r"`((?:estcoap|python3 bench/\S+\.py)(?: [^`]*)?)`")
_COMMAND_GROUPS = {"ca", "idevid", "pending", "users"}  # estcoap GROUP SUBCOMMAND


def test_inline_command_lines_name_options_that_exist() -> None:
    """Command lines quoted in the text (figures tables, `estcoap serve --ca ...`) are not
    run, but every option they name must be one the command takes."""
    helps: dict[tuple[str, ...], str] = {}
    unknown = []
    for path in DOCUMENTS:
        for match in _INLINE_COMMAND.finditer(path.read_text()):
            words = match.group(1).split()
            if words[0] == "estcoap":
                depth = 3 if len(words) > 2 and words[1] in _COMMAND_GROUPS else 2
                command = tuple(w for w in words[1:depth] if not w.startswith("-"))
                argv = [sys.executable, "-m", "estcoap.cli", *command, "--help"]
            else:
                command = (words[1],)
                argv = [sys.executable, str(ROOT / words[1]), "--help"]
            if command not in helps:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)
                assert done.returncode == 0, f"{path.name}: {match.group(1)}: {done.stderr}"
                helps[command] = done.stdout
            for option in re.findall(r"(?<!\S)(--[a-z][a-z0-9-]*)", match.group(1)):
                if option not in helps[command]:
                    unknown.append(f"{path.relative_to(ROOT)}: {option} in `{match.group(1)}`")
    assert not unknown, "\n".join(unknown)
