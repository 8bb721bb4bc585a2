"""What every test may use without importing it: the shared fixtures, a clock tests drive,
and the rule for optional components.

The rule: tests never skip in CI. Locally a missing optional component (a package such as
matplotlib or uvloop, a program such as coap-client-openssl) skips the tests that need it
with a message naming it; with CI set in the environment the same test fails instead, so a
runner that lacks something cannot pass by skipping.
"""

from __future__ import annotations

import datetime
import importlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from estcoap.ca import init_ca
from tests.dtls_util import Pki, make_pki
from tests.pg_cluster import PgCluster, pg_bin

_PYCACHE_OWNER = "ESTCOAP_TEST_PYCACHE_OWNER"


def pytest_configure(config: pytest.Config) -> None:
    """Python processes the tests start (the CLI, servers: hundreds per run) keep their
    compiled bytecode in a directory of the run's own: with PYTHONDONTWRITEBYTECODE set
    and no cache, each of them compiled every estcoap module again. Nothing is written
    into the checkout; pytest-xdist workers inherit the directory of the process that
    started them."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or os.environ.get("PYTHONPYCACHEPREFIX"):
        return
    os.environ["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="estcoap-test-pycache-")
    os.environ[_PYCACHE_OWNER] = str(os.getpid())
    del os.environ["PYTHONDONTWRITEBYTECODE"]


def pytest_unconfigure(config: pytest.Config) -> None:
    if os.environ.get(_PYCACHE_OWNER) == str(os.getpid()):
        shutil.rmtree(os.environ.pop("PYTHONPYCACHEPREFIX"), ignore_errors=True)


# Modules whose tests bound waits by time or load the machine on purpose (a fleet at 20 %
# loss, 200 devices through nginx, SIGKILLed workers, drains, the PSK race, SoftHSM
# shared by a server's worker processes): marked serial, they run alone, in the second
# pass of scripts/test, not beside the parallel (pytest-xdist) pass.
SERIAL_MODULES = {
    "tests/integration/test_coaps_ack_timeout.py",
    "tests/integration/test_hsm_ca.py",
    "tests/integration/test_hsm_client.py",
    "tests/integration/test_hsm_fault_load.py",
    "tests/integration/test_hsm_tls.py",
    "tests/integration/test_psk.py",
    "tests/integration/test_runtime_signals.py",
    "tests/integration/test_simulate.py",
    "tests/integration/test_simulate_scale.py",
    "tests/integration/test_workers.py",
    "tests/interop/test_balancer_nginx.py",
    "tests/unit/test_ca_concurrency.py",
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """With pytest-xdist (`-n N --dist loadgroup`), the tests of one module run on one
    worker, in order, sharing its module fixtures, unless marked xdist_group otherwise
    (the documents of tests/docs, one group each); SERIAL_MODULES are marked serial."""
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(module))
        if module in SERIAL_MODULES:
            item.add_marker(pytest.mark.serial)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def missing(what: str, reason: str) -> None:
    """Skip the calling test (or module) locally; fail it in CI. reason names the component."""
    message = f"{reason} ({what} missing)"
    if in_ci():
        pytest.fail(f"{message}: tests do not skip in CI", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def require(module_or_binary: str, reason: str) -> ModuleType | str:
    """The importable module, or the path of the program on PATH, named module_or_binary;
    when neither exists, skip locally and fail in CI. Call at module level or in a test."""
    try:
        return importlib.import_module(module_or_binary)
    except ImportError:
        pass
    path = shutil.which(module_or_binary)
    if path is not None:
        return path
    missing(module_or_binary, reason)
    raise AssertionError("unreachable")  # skip/fail raised


class FakeClock:
    """A clock the test advances by hand, for objects that take clock= (seconds, as
    time.monotonic or time.time) or now= (clock.utc, a datetime). Starts at the real time."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def utc(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.now, datetime.UTC)

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session", name="pki")
def pki_fixture(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A DTLS test PKI (CA, server, clients); modules that need another define their own pki."""
    return make_pki(tmp_path_factory.mktemp("dtls-pki"))


@pytest.fixture(scope="session", name="pg_cluster")
def pg_cluster_fixture() -> Iterator[PgCluster]:
    """A PostgreSQL server of its own for the run (tests/pg_cluster.py), stopped at the end."""
    require("psycopg", "the PostgreSQL store needs psycopg (the postgresql extra)")
    bindir = pg_bin()
    if bindir is None:
        missing("postgresql", "the PostgreSQL store tests need Debian's postgresql server")
        raise AssertionError("unreachable")
    cluster = PgCluster(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(name="pg_url")
def pg_url_fixture(pg_cluster: PgCluster) -> Iterator[str]:
    """A new empty database in the run's PostgreSQL cluster, dropped after the test."""
    url, name = pg_cluster.create_database()
    yield url
    pg_cluster.drop_database(name)


@pytest.fixture(name="store_url", params=["sqlite", "postgresql"])
def store_url_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's CA store goes, once per backend: the store tests run the same code
    against SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'store.sqlite3'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(name="store_ca_dir")
def store_ca_dir_fixture(tmp_path: Path, store_url: str) -> Path:
    """A fresh CA like ca_dir whose store is store_url (once per backend)."""
    init_ca(tmp_path / "ca", ["127.0.0.1", "localhost"], store_url=store_url)
    return tmp_path / "ca"


@pytest.fixture(name="ca_dir")
def ca_dir_fixture(tmp_path: Path) -> Path:
    """A fresh CA (ca init) whose server certificate names 127.0.0.1 and localhost."""
    init_ca(tmp_path / "ca", ["127.0.0.1", "localhost"])
    return tmp_path / "ca"
