"""The Prometheus metrics of a server process (serve, gateway, proxy): docs/operations.md.

Metrics owns one registry. What happens on a request path is counted by the hooks it
hands out (front(), issuance, upstream, handshake), each a few dictionary lookups and
prometheus_client increments. What can be read from a live object or the store is read
when Prometheus scrapes, not kept up to date on the hot path: DTLS sessions, block-wise
transfers in flight, pending requests, revocations, certificate expiry and the HTTP
authentication counters (watch_* methods).

Label values come from bounded sets only: front names, operation names, response codes,
reasons from fixed lists; never a peer's address or a subject.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .requestlog import RequestLog

# 1 ms .. 10 s: a cacerts answered from memory takes about a millisecond, an enrollment a
# few, a password check or a busy upstream up to seconds; 10 s is where clients give up.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# DTLS handshake failure reasons (estcoap.dtls.server.handshake_failure_reason).
HANDSHAKE_REASONS = ("timeout", "bad_certificate", "untrusted", "cookie", "alert", "other")
UPSTREAM_ERRORS = ("timeout", "unavailable", "status")
ISSUE_KINDS = ("new", "renew", "rekey", "serverkeygen")
PENDING_STATES = ("pending", "approved", "denied")


class StoreCounts(Protocol):
    """What the metrics read from the CA's store at scrape time."""

    def pending_counts(self) -> dict[str, int]: ...

    def revoked_counts(self) -> dict[str, int]: ...


class Metrics:
    """The registry and the hooks that report into it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "estcoap_requests",
            "EST requests answered, by front, operation and response code",
            ["front", "operation", "code"],
            registry=r,
        )
        self.request_duration = Histogram(
            "estcoap_request_duration_seconds",
            "Time from a whole request to its answer, by front and operation",
            ["front", "operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.handshakes = Counter(
            "estcoap_dtls_handshakes",
            "DTLS handshakes, completed or failed (by reason)",
            ["result", "reason"],
            registry=r,
        )
        self.issued_total = Counter(
            "estcoap_certificates_issued",
            "Certificates this process issued, by kind",
            ["kind"],
            registry=r,
        )
        self.upstream_duration = Histogram(
            "estcoap_upstream_request_duration_seconds",
            "Time of the gateway's or proxy's calls to its upstream EST server",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "estcoap_upstream_errors",
            "Upstream calls that failed: timeout, unavailable, status",
            ["operation", "reason"],
            registry=r,
        )
        for kind in ISSUE_KINDS:  # present at 0 from the start, so rate() sees the first one
            self.issued_total.labels(kind)
        self.handshakes.labels("completed", "")
        for reason in HANDSHAKE_REASONS:
            self.handshakes.labels("failed", reason)
        self._scraped = _ScrapeTime()
        r.register(self._scraped)
        self._reporters: dict[str, _FrontReporter] = {}

    # ---- hooks handed to fronts and services --------------------------------------

    def front(self, name: str, log: RequestLog | None = None) -> _FrontReporter:
        """The RequestHook of one front (coaps, https, gateway, proxy)."""
        reporter = self._reporters.get(name)
        if reporter is None:
            reporter = self._reporters[name] = _FrontReporter(self, name, log or RequestLog())
        return reporter

    def issued(self, kind: str) -> None:
        self.issued_total.labels(kind if kind in ISSUE_KINDS else "new").inc()

    def handshake(self, completed: bool, reason: str) -> None:
        if completed:
            self.handshakes.labels("completed", "").inc()
        else:
            self.handshakes.labels(
                "failed", reason if reason in HANDSHAKE_REASONS else "other"
            ).inc()

    def upstream_done(self, operation: str, seconds: float, error: str | None) -> None:
        if error is None:
            self.upstream_duration.labels(operation).observe(seconds)
        else:
            self.upstream_errors.labels(
                operation, error if error in UPSTREAM_ERRORS else "unavailable"
            ).inc()

    # ---- values read at scrape time -----------------------------------------------

    def watch_dtls_sessions(self, count: Callable[[], int]) -> None:
        self._scraped.sessions.append(count)

    def watch_blockwise(self, direction: str, count: Callable[[], int]) -> None:
        self._scraped.blockwise.setdefault(direction, []).append(count)

    def watch_store(self, store: StoreCounts) -> None:
        self._scraped.stores.append(store)

    def watch_certificate(self, name: str, not_after: dt.datetime) -> None:
        """name: ca, server or ra; not_after timezone-aware."""
        self._scraped.expiry[name] = not_after

    def watch_http_auth(self, authenticator: Any) -> None:
        """An https.auth.HttpAuthenticator: its failure limits' counters."""
        self._scraped.authenticators.append(authenticator)


class _FrontReporter:
    """Counts, times and logs the requests of one front; children cached per key, so a
    request costs two dictionary lookups, one increment and one observation."""

    def __init__(self, metrics: Metrics, front: str, log: RequestLog) -> None:
        self._metrics = metrics
        self.front = front
        self.log = log
        self._counts: dict[tuple[str, str], Any] = {}
        self._durations: dict[str, Any] = {}

    def request_done(
        self,
        operation: str,
        code: str,
        seconds: float,
        *,
        label: str | None,
        address: str | None,
        peer: Any,
    ) -> None:
        key = (operation, code)
        count = self._counts.get(key)
        if count is None:
            count = self._counts[key] = self._metrics.requests.labels(self.front, operation, code)
        count.inc()
        duration = self._durations.get(operation)
        if duration is None:
            duration = self._durations[operation] = self._metrics.request_duration.labels(
                self.front, operation
            )
        duration.observe(seconds)
        self.log.request(self.front, operation, code, seconds, label, address, peer)


class _ScrapeTime(Collector):
    """The metrics read from live objects and the store when scraped."""

    def __init__(self) -> None:
        self.sessions: list[Callable[[], int]] = []
        self.blockwise: dict[str, list[Callable[[], int]]] = {}
        self.stores: list[StoreCounts] = []
        self.expiry: dict[str, dt.datetime] = {}
        self.authenticators: list[Any] = []

    def describe(self) -> Iterable[Metric]:
        return []  # collected on demand: registering must not query the store

    def collect(self) -> Iterator[Metric]:
        sessions = GaugeMetricFamily("estcoap_dtls_sessions", "Live DTLS sessions")
        sessions.add_metric([], sum(count() for count in self.sessions))
        yield sessions
        blockwise = GaugeMetricFamily(
            "estcoap_blockwise_transfers", "Block-wise transfers in flight", labels=["direction"]
        )
        for direction in ("block1", "block2"):
            counts = self.blockwise.get(direction, [])
            blockwise.add_metric([direction], sum(count() for count in counts))
        yield blockwise
        yield from self._store_metrics()
        expiry = GaugeMetricFamily(
            "estcoap_certificate_expiry_seconds",
            "Seconds until a certificate of this server expires (negative: expired)",
            labels=["certificate"],
        )
        now = dt.datetime.now(dt.UTC)
        for name, not_after in sorted(self.expiry.items()):
            expiry.add_metric([name], (not_after - now).total_seconds())
        yield expiry
        if self.authenticators:
            yield from self._auth_metrics()

    def _store_metrics(self) -> Iterator[Metric]:
        if not self.stores:
            return
        pending = GaugeMetricFamily(
            "estcoap_pending_requests", "Requests in the CA's store, by state", labels=["state"]
        )
        # A counter read from the store: revocations are rows never removed (nothing is ever
        # un-revoked), so the count only grows, whichever process (ca revoke) added them.
        revoked = CounterMetricFamily(
            "estcoap_certificates_revoked",
            "Certificates revoked in the CA's store (by any process), by reason",
            labels=["reason"],
        )
        by_state: dict[str, int] = dict.fromkeys(PENDING_STATES, 0)
        by_reason: dict[str, int] = {}
        for store in self.stores:
            for state, n in store.pending_counts().items():
                by_state[state] = by_state.get(state, 0) + n
            for reason, n in store.revoked_counts().items():
                by_reason[reason] = by_reason.get(reason, 0) + n
        for state, n in by_state.items():
            pending.add_metric([state], n)
        for reason, n in sorted(by_reason.items()):
            revoked.add_metric([reason], n)
        yield pending
        yield revoked

    def _auth_metrics(self) -> Iterator[Metric]:
        failures = CounterMetricFamily(
            "estcoap_http_auth_failures",
            "HTTP authentication attempts that failed, counted by source address and user name",
            labels=["scope"],
        )
        lockouts = CounterMetricFamily(
            "estcoap_http_auth_lockouts",
            "Source addresses or user names that ran out of authentication attempts",
            labels=["scope"],
        )
        for scope, limit in (("source", "by_source"), ("user", "by_user")):
            limits = [getattr(a, limit) for a in self.authenticators]
            failures.add_metric([scope], sum(x.failures for x in limits))
            lockouts.add_metric([scope], sum(x.lockouts for x in limits))
        yield failures
        yield lockouts
