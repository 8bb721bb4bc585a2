"""EST-coaps over PSK DTLS: the device side of certificate-less first enrollment.

aiocoap's tinydtls client transport (DTLSSocket) with one pre-shared key for this
server. The key authenticates both ends, so no trust anchors are needed for the
channel; tinydtls exposes no tls-unique, so proof-of-possession cannot be linked to
the channel (the server does not ask for it from a PSK device).
"""

from __future__ import annotations

from aiocoap import Message

from ..pskengine import PskUnavailable, require_dtlssocket
from .coaps_transport import CoapsTransport, CoapsTransportError


class PskCoapsTransport(CoapsTransport):
    def __init__(
        self,
        url: str,
        *,
        identity: str,
        key: bytes,
        block_size: int | None = None,
        timeout: float = 30.0,
        handshake_timeout: float | None = None,
    ) -> None:
        super().__init__(
            url,
            trust_anchors=[],
            certificate_chain=[],
            private_key=None,
            block_size=block_size,
            timeout=timeout,
            handshake_timeout=handshake_timeout,
        )
        self._identity = identity.encode("utf-8")
        self._psk = bytes(key)
        # aiocoap's tinydtls client pool holds associations weakly: one that no message
        # refers to any more is shut down at the next garbage collection, and the next call
        # makes a new handshake, which a key spent (or removed) meanwhile cannot complete.
        # So the association is held here until close(): one handshake per client, and
        # every call after it is answered by the server (a spent key gets 4.03, not silence).
        self._association: object = None
        self._answered: object = None  # the association the server has answered on

    async def _ctx(self):
        if self._context is None:
            try:
                require_dtlssocket()
            except PskUnavailable as exc:
                raise CoapsTransportError(str(exc)) from None
            import aiocoap
            from aiocoap.credentials import DTLS

            context = await aiocoap.Context.create_client_context(transports=["tinydtls"])
            context.client_credentials[f"{self._origin}/*"] = DTLS(
                psk=self._psk, client_identity=self._identity
            )
            self._context = context
        return self._context

    async def _connect(self, message: Message) -> None:
        context = await self._ctx()
        try:
            await context.find_remote_and_interface(message)
        except Exception as exc:  # aiocoap's credential lookup, an unreachable host
            raise CoapsTransportError(f"{self._origin}: {exc}") from exc
        self._association = message.remote  # a new one when the last has failed
        if self._block_exp is not None:
            message.remote.maximum_block_size_exp = self._block_exp

    async def _exchange(self, message: Message) -> Message:
        try:
            response = await super()._exchange(message)
        except CoapsTransportError as exc:
            if message.remote is not None and message.remote is self._answered:
                raise  # the channel worked: whatever failed, it was not the handshake
            identity = self._identity.decode("utf-8", "replace")
            if isinstance(exc.__cause__, TimeoutError):
                # A server drops a Finished it cannot verify without a word (RFC 6347
                # s4.1.2.7): a wrong key looks like silence.
                raise CoapsTransportError(
                    f"{exc}: the PSK DTLS handshake as {identity!r} did not complete (a wrong "
                    "key is dropped silently; or nothing answers there)"
                ) from exc
            # tinydtls reports a refused handshake as a bare network error: say what it
            # means for a PSK.
            raise CoapsTransportError(
                f"{self._origin}: PSK DTLS handshake refused for identity {identity!r}: the "
                "key is wrong, or the server has no usable key for it (unknown, used up or "
                "expired)"
            ) from exc
        self._answered = message.remote
        return response

    async def close(self) -> None:
        await super().close()  # shuts the held association down (close_notify)
        self._association = self._answered = None
