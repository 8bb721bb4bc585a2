"""The EST-coaps registrar (RFC 9148 s5) and HTTPS proxy: EstService over an upstream server."""

from .pool import HttpsPool
from .upstream import Upstream
from .wiring import (
    Gateway,
    Proxy,
    UpstreamSettings,
    open_upstream,
    parse_upstream_url,
    start_gateway,
    start_proxy,
)

__all__ = [
    "Gateway",
    "HttpsPool",
    "Proxy",
    "Upstream",
    "UpstreamSettings",
    "open_upstream",
    "parse_upstream_url",
    "start_gateway",
    "start_proxy",
]
