"""The small hooks fronts and services report through, each with a no-op default.

Fronts and services are handed an object with these methods; they never import the
metrics library. Every value passed must come from a bounded set (operation names,
response codes, reasons from a fixed list): the receiver turns them into metric labels.
The peer's address and identity go to the request log only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..service import Peer


class RequestHook(Protocol):
    """One finished EST request of one front. address is the peer's; peer is who it
    authenticated as (None when the request ended before that). Both go to the request
    log only (never a metric label); peer.describe() is only called when logging."""

    def request_done(
        self,
        operation: str,
        code: str,
        seconds: float,
        *,
        label: str | None,
        address: str | None,
        peer: Peer | None,
    ) -> None: ...


class IssuanceHook(Protocol):
    """A certificate the service issued; kind is new, renew, rekey or serverkeygen."""

    def issued(self, kind: str) -> None: ...


class UpstreamHook(Protocol):
    """One call of the gateway's or proxy's upstream: its duration, or why it failed
    (timeout, unavailable, status)."""

    def upstream_done(self, operation: str, seconds: float, error: str | None) -> None: ...


class _Nothing:
    """Reports nowhere: the default of every hook."""

    def request_done(
        self,
        operation: str,
        code: str,
        seconds: float,
        *,
        label: str | None,
        address: str | None,
        peer: Peer | None,
    ) -> None:
        return None

    def issued(self, kind: str) -> None:
        return None

    def upstream_done(self, operation: str, seconds: float, error: str | None) -> None:
        return None


NO_HOOK = _Nothing()
