"""An EST-coaps gateway (RFC 9148 s5) in front of an existing HTTPS EST server, in a few lines:
devices speak CoAP over DTLS to it; it speaks RFC 7030 upstream as an RA.

    python examples/coaps_gateway.py --upstream https://est.example:8443 \
        --upstream-trust up-ca.pem \
        --ra-cert ra.pem --ra-key ra.key --server-cert gw.pem --server-key gw.key \
        --trust-clients maker.pem --coaps 127.0.0.1:5684

`estcoap gateway` is the full command (labels, credentials, timeouts); see docs/gateway.md.
(Not named gateway.py: a script named like the `gateway` package would shadow it.)
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from estcoap.client import load_certificates, load_private_key
from estcoap.gateway import UpstreamSettings, open_upstream, start_gateway


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for option in (
        "--upstream",
        "--upstream-trust",
        "--ra-cert",
        "--ra-key",
        "--server-cert",
        "--server-key",
        "--trust-clients",
    ):
        parser.add_argument(option, required=True)
    parser.add_argument("--coaps", default="127.0.0.1:5684")
    args = parser.parse_args()

    settings = UpstreamSettings(
        url=args.upstream,
        trust=load_certificates(args.upstream_trust),
        ra_chain=load_certificates(args.ra_cert),
        ra_key=load_private_key(args.ra_key),
    )
    upstream = open_upstream(settings, trust_clients=load_certificates(args.trust_clients))
    host, _, port = args.coaps.rpartition(":")
    gateway = await start_gateway(
        upstream, [(host.strip("[]"), int(port))], cert_chain=args.server_cert, key=args.server_key
    )
    if gateway.warning:
        print(f"warning: {gateway.warning}", flush=True)
    print(f"gateway {gateway.url} -> {args.upstream}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await gateway.close()


if __name__ == "__main__":
    asyncio.run(main())
