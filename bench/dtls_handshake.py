"""DTLS server benchmark: full mutual handshakes/s, server CPU per handshake, RSS per idle session.

The server (estcoap.dtls over aiocoap) runs in this process; the clients run in a separate
process (sans-IO associations on raw UDP sockets), so the two share the machine's cores
the way a real deployment would not: the figures are a floor.

    python3 bench/dtls_handshake.py [--handshakes 3000] [--concurrency 32] [--idle 1000 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _dtls import close, flush, handshake  # noqa: E402

from estcoap.dtls import DtlsClientConfig, DtlsServerConfig, create_server_context  # noqa: E402
from estcoap.dtls.association import DtlsAssociation, State, check_server_name  # noqa: E402
from estcoap.dtls.contexts import client_context  # noqa: E402
from tests.dtls_util import make_pki  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


# -- client process ---------------------------------------------------------------------


async def _handshake(
    ctx, server: tuple[str, int], local_ip: str
) -> tuple[socket.socket, DtlsAssociation]:
    """A session that must come up: a failed handshake ends the run."""
    sock, assoc = await handshake(ctx, server, local_ip)
    if assoc.state is not State.ESTABLISHED:
        sock.close()
        raise RuntimeError(f"handshake failed: {assoc.error}")
    return sock, assoc


async def _client_main(conn, pki_dir: str, server: tuple[str, int]) -> None:
    pki = Path(pki_dir)
    config = DtlsClientConfig.from_files(pki / "ca.pem", pki / "client.pem", pki / "client.key")
    ctx = client_context(config, check_server_name)
    held: list[tuple[socket.socket, DtlsAssociation]] = []
    loop = asyncio.get_running_loop()
    counter = 0

    def next_ip() -> str:
        nonlocal counter
        counter += 1
        return f"127.0.{(counter // 250) % 250 + 1}.{counter % 250 + 2}"

    while True:
        command, *args = await loop.run_in_executor(None, conn.recv)
        if command == "rate":
            total, concurrency = args
            remaining = total

            async def worker() -> None:
                nonlocal remaining
                while remaining > 0:
                    remaining -= 1
                    close(*await _handshake(ctx, server, next_ip()))

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            conn.send(time.perf_counter() - start)
        elif command == "hold":
            (count,) = args

            async def hold_one(sem: asyncio.Semaphore) -> None:
                async with sem:
                    sock, assoc = await _handshake(ctx, server, next_ip())
                    # one CoAP ping: the first application record confirms the session
                    assoc.send(bytes([0x40, 0x00, len(held) >> 8 & 0xFF, len(held) & 0xFF]))
                    flush(sock, assoc)
                    held.append((sock, assoc))

            limit = asyncio.Semaphore(32)
            await asyncio.gather(*(hold_one(limit) for _ in range(count)))
            conn.send(len(held))
        elif command == "release":
            for sock, assoc in held:
                close(sock, assoc)
            held.clear()
            conn.send(0)
        else:
            return


def client_process(conn, pki_dir: str, server: tuple[str, int]) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(_client_main(conn, pki_dir, server))


# -- server side ------------------------------------------------------------------------


async def ask(conn, *message):
    conn.send(message)
    return await asyncio.get_running_loop().run_in_executor(None, conn.recv)


async def wait_sessions(transport, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout

    def confirmed(session) -> bool:
        return session.association.openssl_released or not transport.config.compact_sessions

    while sum(1 for s in transport.sessions.values() if confirmed(s)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(transport.sessions)} sessions")
        await asyncio.sleep(0.05)


async def main(args: argparse.Namespace) -> None:
    pki_dir = tempfile.mkdtemp(prefix="dtls-bench-")
    pki = make_pki(Path(pki_dir))
    config = DtlsServerConfig.from_files(
        pki.server.cert_path,
        pki.server.key_path,
        pki.ca.cert_path,
        max_sessions=max(args.idle) + 100,
        compact_sessions=not args.no_compact,
    )
    context, transport = await create_server_context(None, [("0.0.0.0", 0)], config)
    server = ("127.0.0.1", transport.bound_addresses[0][1])
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(
        target=client_process, args=(child, pki_dir, server), daemon=True
    )
    proc.start()
    rows: list[tuple[str, str]] = []
    try:
        await ask(parent, "rate", 100, 8)  # warm-up
        done_before = transport.handshakes_completed
        cpu_before = time.process_time()
        elapsed = await ask(parent, "rate", args.handshakes, args.concurrency)
        cpu = time.process_time() - cpu_before
        done = transport.handshakes_completed - done_before
        rows.append(("full mutual handshakes/s (served)", f"{done / elapsed:.0f}"))
        rows.append(("server CPU per handshake", f"{cpu / done * 1000:.2f} ms"))
        rows.append(("handshakes measured / concurrency", f"{done} / {args.concurrency}"))
        await asyncio.sleep(0.3)  # let close_notifys land

        baseline = rss_bytes()
        base_count = len(transport.sessions)
        for count in sorted(args.idle):
            await ask(parent, "hold", count - (len(transport.sessions) - base_count))
            await wait_sessions(transport, count)
            held = len(transport.sessions) - base_count
            per = (rss_bytes() - baseline) / held
            rows.append((f"RSS per idle session, {held} open", f"{per / 1024:.1f} KiB"))
        rows.append(("server RSS with all idle sessions", f"{rss_bytes() / 2**20:.0f} MiB"))
        await ask(parent, "release")
    finally:
        parent.send(("stop",))
        proc.join(5)
        if proc.is_alive():
            proc.kill()
        await context.shutdown()

    width = max(len(name) for name, _ in rows)
    print(f"{'metric'.ljust(width)}  value")
    print(f"{'-' * width}  {'-' * 12}")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    mode = "OpenSSL kept per session" if args.no_compact else "compact sessions"
    print(f"(cores: {os.cpu_count()}, ECDHE-ECDSA-AES128-CCM8, P-256 certificates, {mode})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handshakes", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--idle", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument(
        "--no-compact",
        action="store_true",
        help="keep each session's OpenSSL connection (compact_sessions=False)",
    )
    asyncio.run(main(parser.parse_args()))
