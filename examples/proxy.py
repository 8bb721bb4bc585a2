"""An EST over HTTPS proxy (RA, RFC 7030 s3.7) in front of another EST server: clients
authenticate to the proxy; the proxy forwards with its own RA certificate.

    python examples/proxy.py --upstream https://est.example:8443 --upstream-trust up-ca.pem \
        --ra-cert ra.pem --ra-key ra.key --server-cert px.pem --server-key px.key \
        --trust-clients maker.pem --https 127.0.0.1:9443

`estcoap proxy` is the full command (users, labels, timeouts); see docs/gateway.md.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from estcoap.client import load_certificates, load_private_key
from estcoap.gateway import UpstreamSettings, open_upstream, start_proxy


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
    parser.add_argument("--https", default="127.0.0.1:9443")
    args = parser.parse_args()

    settings = UpstreamSettings(
        url=args.upstream,
        trust=load_certificates(args.upstream_trust),
        ra_chain=load_certificates(args.ra_cert),
        ra_key=load_private_key(args.ra_key),
    )
    upstream = open_upstream(settings, trust_clients=load_certificates(args.trust_clients))
    host, _, port = args.https.rpartition(":")
    proxy = await start_proxy(
        upstream, host.strip("[]"), int(port), cert_chain=args.server_cert, key=args.server_key
    )
    if proxy.warning:
        print(f"warning: {proxy.warning}", flush=True)
    print(f"proxy {proxy.url} -> {args.upstream}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await proxy.close()


if __name__ == "__main__":
    asyncio.run(main())
