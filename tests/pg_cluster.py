"""A throwaway PostgreSQL cluster for the test run (Debian's postgresql package): initdb in
a temporary directory owned by the postgres user, its own port and Unix socket directory,
no TCP listener beyond loopback, trust authentication for local connections only. The
session fixture in conftest.py starts one and stops it at the end, also on failure."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path


def pg_bin() -> Path | None:
    """Debian's server binaries (/usr/lib/postgresql/VERSION/bin), newest first."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(found[0]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="estcoap-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "run"
        self.port = _free_port()
        self.log = self.root / "server.log"
        self.started = False

    def _as_postgres(self, *args: str, timeout: float = 120) -> None:
        # Root may not run the server: run it as Debian's postgres user when we are root.
        command = [str(a) for a in args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=timeout)

    def start(self) -> None:
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
        os.chmod(self.root, 0o755)
        self._as_postgres(
            self.bindir / "initdb",
            "-D",
            self.data,
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        )
        for attempt in range(3):
            try:
                self.start_server()
                return
            except subprocess.CalledProcessError:
                # The free port was taken before the server bound it (pytest-xdist workers
                # start their clusters at the same moment): another one.
                if attempt == 2:
                    raise
                self.port = _free_port()

    def start_server(self) -> None:
        """Start the server of the initialised cluster (again, after stop_server)."""
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.socket_dir} -c fsync=off "
            "-c max_connections=200"
        )
        self._as_postgres(
            self.bindir / "pg_ctl",
            "-D",
            self.data,
            "-l",
            self.log,
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        self.started = True

    def stop_server(self) -> None:
        """Stop the server, keeping the cluster (a database server going away)."""
        self._as_postgres(
            self.bindir / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop", timeout=60
        )
        self.started = False

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}&port={self.port}"

    def create_database(self) -> tuple[str, str]:
        """A new empty database: its URL and name."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self._admin(f"CREATE DATABASE {name}")
        return self.url(name), name

    def drop_database(self, name: str) -> None:
        self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)

    def stop(self) -> None:
        try:
            if self.started:
                self._as_postgres(
                    self.bindir / "pg_ctl",
                    "-D",
                    self.data,
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                    timeout=60,
                )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
