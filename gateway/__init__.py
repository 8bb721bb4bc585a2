"""The EST-coaps registrar (RFC 9148 s5) and HTTPS proxy: EstService over an upstream server."""

from .upstream import Upstream

__all__ = ["Upstream"]
