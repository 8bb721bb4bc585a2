"""The granular EST calls, one by one, as a device would use them over its lifetime.

python examples/client.py coaps://127.0.0.1:5684 --trust ca.pem \
    --client-cert idevid.pem --client-key idevid.key
"""

from __future__ import annotations

import argparse
import asyncio

from cryptography.hazmat.primitives.asymmetric import ec

from estcoap.client import EstClient, EstClientError
from estcoap.codec.csrattrs import requested_key, wants_challenge_password


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--trust", required=True)
    parser.add_argument("--client-cert", help="client certificate (the IDevID for coaps://)")
    parser.add_argument("--client-key", help="its private key")
    parser.add_argument("--subject", default="CN=example-device")
    args = parser.parse_args()

    try:
        # 1. Bootstrap identity: the IDevID authenticates the DTLS/TLS channel.
        async with EstClient(
            args.url, trust=args.trust, cert=args.client_cert, key=args.client_key
        ) as est:
            cas = await est.cacerts()
            print(f"cacerts: {len(cas)} certificate(s), {cas[0].subject.rfc4514_string()}")

            attrs = await est.csrattrs()
            print(f"csrattrs: key {requested_key(attrs)}, PoP {wants_challenge_password(attrs)}")

            key = ec.generate_private_key(ec.SECP256R1())
            chain = await est.enroll(key=key, subject=args.subject, pop=True)
            operational = chain[0]
            print(f"enroll: serial {operational.serial_number:x}")

            server_key, certs = await est.serverkeygen(subject=args.subject)
            print(f"serverkeygen: {type(server_key).__name__}, serial {certs[0].serial_number:x}")

        # 2. Later in life: renew with the operational certificate as the channel identity.
        async with EstClient(args.url, trust=args.trust, cert=operational, key=key) as est:
            renewed = (await est.reenroll())[0]
            print(f"reenroll (renew): serial {renewed.serial_number:x}")
            rekeyed = (await est.reenroll(key=ec.generate_private_key(ec.SECP256R1())))[0]
            print(f"reenroll (rekey): serial {rekeyed.serial_number:x}")
    except EstClientError as exc:
        print(f"failed: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
