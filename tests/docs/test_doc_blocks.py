"""Every shell block of README.md and docs/*.md runs as written, so a document that drifts
from the code fails here.

Each document's ```sh (or bash, shell) blocks run in order in one bash of the document's
own under `set -euo pipefail`, as a reader would in one terminal, each block a test of its
own; in a temporary directory of their own (with bench/ and examples/ linked in),
against real servers on loopback: `estcoap` and `python3` are this test's interpreter.
How the script differs from what a reader types, and why:

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

import contextlib
import functools
import io
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from estcoap.cli import main as estcoap_main

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

BLOCK_TIMEOUT = 300  # seconds; a block takes a few seconds
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


def block_script(
    block: Block, ports: dict[str, int], started: int
) -> tuple[str, dict[int, str], int]:
    """The bash lines of one block (sourced by the document's shell), which document line
    each is, and how many background commands the document has started after it."""
    lines = [f'echo "### {block.document}:{block.line} (at $SECONDS s)"']
    origin: dict[int, str] = {}
    for doc_line, command in logical_commands(block):
        where = f"{block.document}:{doc_line}"
        command = relocate(command, ports)
        background_command = _BACKGROUND.match(command)
        if background_command and not command.lstrip().startswith("#"):
            started += 1
            command = background(background_command.group("command"), started, where)
        lines.append(command)
        origin[len(lines)] = f"{where}: {command}"
    # A step may end with a list that is false on purpose (`openssl verify ... && exit 1`),
    # which set -e lets pass inside a script; the step's status must not end the shell.
    lines.append("true")
    return "\n".join(lines) + "\n", origin, started


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


def complete_bash(text: str) -> bool:
    """Whether text parses as bash on its own (no open if, loop, quote or here-document)."""
    parsed = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
    return parsed.returncode == 0 and not parsed.stderr


def steps(block: Block) -> list[Block]:
    """A block cut into steps: each command (with the comment before it), or more where
    one is not complete bash without the next lines (an if, a loop, a here-document)."""
    lines = block.text.splitlines()
    found, start, commands = [], 0, 0
    for index, line in enumerate(lines):
        starts_command = (
            line.strip()
            and not line.lstrip().startswith("#")
            and not (index and lines[index - 1].endswith("\\"))
        )
        if starts_command and commands and complete_bash("\n".join(lines[start:index])):
            cut = index  # the comment and blank lines before a command go with it
            while not lines[cut - 1].strip() or lines[cut - 1].lstrip().startswith("#"):
                cut -= 1
            found.append(
                Block(block.document, block.line + start, "\n".join(lines[start:cut]), None)
            )
            start, commands = cut, 0
            while not lines[start].strip():
                start += 1
        commands += bool(starts_command)
    if any(line.strip() for line in lines[start:]):
        found.append(Block(block.document, block.line + start, "\n".join(lines[start:]), None))
    return found


def runnable_steps(path: Path) -> list[Block]:
    """The steps of the blocks that run, in the document's order."""
    return [step for b in shell_blocks(path) if b.not_run is None for step in steps(b)]


class DocumentShell:
    """One document's bash, fed its blocks one at a time (a test each), so that what an
    earlier block made (files, variables, servers in the background) is there for the
    next, as for a reader going through the document in one terminal. The shell runs
    under `set -euo pipefail`: a command that fails ends it, and with it the document."""

    def __init__(self, path: Path, workdir: Path) -> None:
        self.blocks = runnable_steps(path)
        self.ports = port_map(self.blocks)
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir()
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
            DOCS_LOGS=str(self.logs),
        )
        # The shell reads its commands from the test; each block's own stdin is /dev/null
        # and its output goes to a log, so only the end-of-block lines come back here.
        self.proc = subprocess.Popen(
            ["bash", "-s"],
            cwd=run_dir,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._send(
            "set -euo pipefail\n"
            "trap 'echo \"docs test: script line $LINENO failed (exit $?)\" >&2' ERR\n"
        )
        self.done = 0  # blocks run so far
        self.started = 0  # background commands started so far
        self.failure: str | None = None

    def _send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def _wait_for(self, marker: bytes, timeout: float) -> bool:
        """True when the shell wrote marker; False when it ended or the time ran out."""
        assert self.proc.stdout is not None
        fd, seen, deadline = self.proc.stdout.fileno(), b"", time.monotonic() + timeout
        while marker not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return False
            chunk = os.read(fd, 4096)
            if not chunk:
                return False
            seen += chunk
        return True

    def run_through(self, index: int) -> None:
        """Run the blocks up to index (those not run yet); fails the test when one fails."""
        while self.done <= index:
            if self.failure is not None:
                pytest.fail(f"an earlier step failed: {self.failure}", pytrace=False)
            self._run_next()

    def _run_next(self) -> None:
        block = self.blocks[self.done]
        script, origin, self.started = block_script(block, self.ports, self.started)
        name = f"block-{self.done}"
        (self.workdir / f"{name}.sh").write_text(script)
        out = self.logs / f"{name}.out"
        self._send(
            f'source "{self.workdir / name}.sh" </dev/null >"{out}" 2>&1\necho @@done-{self.done}\n'
        )
        self.done += 1
        if self._wait_for(f"@@done-{self.done - 1}\n".encode(), BLOCK_TIMEOUT):
            return
        if self.proc.poll() is None:
            self.proc.kill()
            ending = f"docs test: stopped after {BLOCK_TIMEOUT} s"
        else:
            ending = f"the shell ended (exit {self.proc.returncode})"
        self.close()
        output = out.read_text(errors="replace") if out.exists() else ""
        self.failure = f"{block.document}:{block.line}"
        for log in sorted(self.logs.glob("bg-*")):
            output += f"\n--- {log.name}:\n{log.read_text(errors='replace')}"
        pytest.fail(f"failed at {failed_at(output, origin)}; {ending}\n{output}", pytrace=False)

    def close(self) -> None:
        """End the shell and everything the document left running (its servers)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if not self.proc.stdin.closed:
            self.proc.stdin.close()  # the shell ends at the end of its input
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        # Reaped first: a group whose leader is a zombie would look alive to stop_group.
        stop_group(self.proc.pid)
        self.proc.stdout.close()


def failed_at(output: str, origin: dict[int, str]) -> str:
    found = re.findall(r"docs test: script line (\d+) failed", output)
    return origin.get(int(found[-1]), "?") if found else "?"


class Documents:
    """The shell of the document being tested; one document at a time, so that servers a
    document started are gone before the next one starts its own."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.current: tuple[Path, DocumentShell] | None = None

    def shell(self, path: Path) -> DocumentShell:
        if self.current is None or self.current[0] != path:
            self.close()
            workdir = self.tmp_path_factory.mktemp(f"doc-{path.stem}")
            self.current = (path, DocumentShell(path, workdir))
        return self.current[1]

    def close(self) -> None:
        if self.current is not None:
            self.current[1].close()
            self.current = None


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Documents]:
    shells = Documents(tmp_path_factory)
    try:
        yield shells
    finally:
        shells.close()


def _document_blocks() -> list[object]:
    """(document, block index) for each block that runs; the blocks of one document stay
    together on one pytest-xdist worker, in order."""
    cases: list[object] = []
    for path in DOCUMENTS:
        name = path.relative_to(ROOT).as_posix()
        for index, block in enumerate(runnable_steps(path)):
            cases.append(
                pytest.param(
                    path,
                    index,
                    id=f"{name}:{block.line}",
                    marks=pytest.mark.xdist_group(f"docs-{name}"),
                )
            )
    return cases


@pytest.mark.timeout(BLOCK_TIMEOUT + 60)
@pytest.mark.parametrize(("path", "index"), _document_blocks())
def test_every_shell_block_runs_as_written(path: Path, index: int, documents: Documents) -> None:
    """Each block is a test of its own; they run in the document's order in one shell (an
    earlier block that was not selected runs first, in the same test)."""
    documents.shell(path).run_through(index)


def test_blocks_not_run_are_the_listed_ones() -> None:
    marked = {
        (b.document, b.first_command): b.not_run
        for path in DOCUMENTS
        for b in shell_blocks(path)
        if b.not_run is not None
    }
    assert set(marked) == NOT_RUN, "a not-run marker was added or removed: update NOT_RUN"


def test_the_steps_hold_every_line_of_the_blocks_that_run() -> None:
    """Cutting the blocks into steps leaves out blank lines only, and keeps the order."""
    for path in DOCUMENTS:
        blocks = [b for b in shell_blocks(path) if b.not_run is None]
        lines = [line for b in blocks for line in b.text.splitlines() if line.strip()]
        cut = [line for s in runnable_steps(path) for line in s.text.splitlines() if line.strip()]
        assert cut == lines, path
    if_block = Block("x.md", 1, "a\n\n# b\nif c; then\n  d\n\nfi\ne \\\n  f", None)
    assert [(s.line, s.text) for s in steps(if_block)] == [
        (1, "a"),
        (3, "# b\nif c; then\n  d\n\nfi"),
        (8, "e \\\n  f"),
    ]


def test_the_walkthrough_is_found() -> None:
    """A parser that found nothing would pass every document."""
    blocks = [b for b in shell_blocks(ROOT / "README.md") if b.not_run is None]
    assert any("estcoap ca init" in b.text for b in blocks)
    assert any("estcoap serve" in b.text for b in blocks)


_INLINE_COMMAND = re.compile(r"`((?:estcoap|python3 bench/\S+\.py)(?: [^`]*)?)`")
_COMMAND_GROUPS = {"ca", "idevid", "pending", "users"}  # estcoap GROUP SUBCOMMAND


@functools.cache
def command_help(command: tuple[str, ...]) -> str:
    """What `estcoap COMMAND... --help` prints (estcoap's own entry point, in this
    process: one import for every command), or `python3 bench/NAME.py --help`."""
    if command and command[0].startswith("bench/"):
        argv = [sys.executable, str(ROOT / command[0]), "--help"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert done.returncode == 0, f"{' '.join(command)} --help: {done.stderr}"
        return done.stdout
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as ended:
        estcoap_main([*command, "--help"])
    assert ended.value.code == 0, f"estcoap {' '.join(command)} --help: exit {ended.value.code}"
    return printed.getvalue()


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_inline_command_lines_name_options_that_exist(path: Path) -> None:
    """Command lines quoted in the text (figures tables, `estcoap serve --ca ...`) are not
    run, but every option they name must be one the command takes."""
    unknown = []
    for match in _INLINE_COMMAND.finditer(path.read_text()):
        words = match.group(1).split()
        if words[0] == "estcoap":
            depth = 3 if len(words) > 2 and words[1] in _COMMAND_GROUPS else 2
            command = tuple(w for w in words[1:depth] if not w.startswith("-"))
        else:
            command = (words[1],)
        shown = command_help(command)
        for option in re.findall(r"(?<!\S)(--[a-z][a-z0-9-]*)", match.group(1)):
            if option not in shown:
                unknown.append(f"{path.relative_to(ROOT)}: {option} in `{match.group(1)}`")
    assert not unknown, "\n".join(unknown)
