"""One log line per EST request, at INFO on the logger estcoap.requests.

The line names the front, the peer's address, who it authenticated as, the operation,
the CA label, the response code and the milliseconds taken. Nothing of the request's
content is logged (no CSR, no key, no Authorization header): the identity is the
certificate subject or the HTTP user name the front authenticated. With
`--log-format json` the same fields are the keys of the line's object (logsafe).
"""

from __future__ import annotations

import logging
from typing import Any

LOGGER = "estcoap.requests"


class RequestLog:
    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger(LOGGER)

    def request(
        self,
        front: str,
        operation: str,
        code: str,
        seconds: float,
        label: str | None,
        address: str | None,
        peer: Any,
    ) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return  # the identity is only worked out for a line that is written
        identity = peer.describe() if peer is not None else "-"
        if peer is not None and address is None:
            address = peer.address
        fields = {
            "front": front,
            "peer": address or "-",
            "identity": identity,
            "operation": operation,
            "label": label or "-",
            "code": code,
            "ms": round(seconds * 1000, 1),
        }
        self.logger.info(
            "%(front)s %(peer)s %(identity)s %(operation)s label=%(label)s %(code)s %(ms).1f ms",
            fields,
            extra={"fields": fields},
        )
