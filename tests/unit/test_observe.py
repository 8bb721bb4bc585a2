"""estcoap.observe without a server: the handshake reasons one set in dtls and metrics,
bounded labels for what a peer can choose, the request log's line and level, JSON logs."""

from __future__ import annotations

import io
import json
import logging

import pytest

from estcoap.dtls.errors import ConnectionClosed, HandshakeFailed, HandshakeTimeout
from estcoap.dtls.server import HANDSHAKE_FAILURE_REASONS, handshake_failure_reason
from estcoap.logsafe import JsonFormatter, install
from estcoap.observe.metrics import HANDSHAKE_REASONS, Metrics
from estcoap.observe.requestlog import LOGGER, RequestLog
from estcoap.service import Peer, Transport


def test_one_set_of_handshake_reasons() -> None:
    assert HANDSHAKE_REASONS == HANDSHAKE_FAILURE_REASONS


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (HandshakeTimeout("handshake did not complete in time"), "timeout"),
        (HandshakeFailed("certificate verify failed"), "untrusted"),
        (HandshakeFailed("tlsv1 alert unknown ca"), "untrusted"),
        (HandshakeFailed("peer did not return a certificate"), "bad_certificate"),
        (HandshakeFailed("ClientHello cookie not accepted"), "cookie"),
        (ConnectionClosed("peer sent fatal alert handshake_failure"), "alert"),
        (HandshakeFailed("no shared cipher"), "other"),
    ],
)
def test_handshake_failures_map_to_a_bounded_reason(error: Exception, reason: str) -> None:
    assert handshake_failure_reason(error) == reason


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.registry.collect()
        for s in family.samples
    }


def test_label_values_stay_in_their_sets() -> None:
    metrics = Metrics()
    metrics.handshake(False, "whatever a peer made OpenSSL say")
    metrics.issued("sideways")
    metrics.upstream_done("simpleenroll", 0.0, "made up")
    got = samples(metrics)
    assert got[("estcoap_dtls_handshakes_total", (("reason", "other"), ("result", "failed")))] == 1
    assert got[("estcoap_certificates_issued_total", (("kind", "new"),))] == 1
    assert ("estcoap_certificates_issued_total", (("kind", "sideways"),)) not in got
    key = (
        "estcoap_upstream_errors_total",
        (("operation", "simpleenroll"), ("reason", "unavailable")),
    )
    assert got[key] == 1


def test_request_line_at_info_only_and_without_content() -> None:
    stream = io.StringIO()
    logger = logging.getLogger(LOGGER + ".test")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    peer = Peer(transport=Transport.HTTPS, http_user="alice", address="192.0.2.1")
    metrics = Metrics()
    front = metrics.front("https", RequestLog(logger))
    logger.setLevel(logging.WARNING)
    front.request_done("simpleenroll", "200", 0.0042, label="tenant", address=None, peer=peer)
    assert stream.getvalue() == ""  # counted, not logged
    logger.setLevel(logging.INFO)
    front.request_done("simpleenroll", "200", 0.0042, label="tenant", address=None, peer=peer)
    assert stream.getvalue() == "https 192.0.2.1 user:alice simpleenroll label=tenant 200 4.2 ms\n"
    got = samples(metrics)
    labels = (("code", "200"), ("front", "https"), ("operation", "simpleenroll"))
    assert got[("estcoap_requests_total", labels)] == 2
    logger.removeHandler(handler)


def test_json_lines_carry_the_request_fields() -> None:
    stream = io.StringIO()
    level = logging.getLogger().level
    handler = install(logging.INFO, stream=stream, fmt="json")
    try:
        RequestLog().request("coaps", "cacerts", "2.05", 0.001, None, "[::1]:5684", None)
        logging.getLogger("estcoap.test").warning("two\nlines")
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(level)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["logger"] == LOGGER and first["front"] == "coaps" and first["code"] == "2.05"
    assert first["peer"] == "[::1]:5684" and first["identity"] == "-" and first["ms"] == 1.0
    assert second["level"] == "WARNING" and second["message"] == "two"  # one line (FloodGuard)
    assert isinstance(JsonFormatter().format(logging.makeLogRecord({"msg": "x"})), str)
    with pytest.raises(ValueError, match="unknown log format"):
        install(logging.INFO, stream=stream, fmt="xml")
