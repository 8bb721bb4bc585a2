"""One-call provisioning (libEST's easy-provision flow): cacerts, csrattrs, key + CSR as
the server asks (PoP included), enroll; then keep certificate, key and chain.

    python examples/client_simple.py coaps://127.0.0.1:5684 --trust ca.pem \
        --client-cert idevid.pem --client-key idevid.key --subject "CN=device-0001" --out device

Works the same with an https:// URL (then --client-cert/--client-key are optional). The
options are named as estcoap's own (`estcoap --help`).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from estcoap.client import EstClient, EstClientError


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--trust", required=True, help="the EST server's CA (PEM)")
    parser.add_argument("--client-cert", help="the device's IDevID (PEM)")
    parser.add_argument("--client-key", help="the IDevID's private key (PEM)")
    parser.add_argument("--subject", required=True)
    parser.add_argument("--out", required=True, help="prefix for OUT.pem, OUT.key, OUT-chain.pem")
    args = parser.parse_args()

    try:
        async with EstClient(
            args.url, trust=args.trust, cert=args.client_cert, key=args.client_key
        ) as est:
            result = await est.provision(args.subject)
    except EstClientError as exc:
        print(f"provisioning failed: {exc}")
        return 1

    pem = serialization.Encoding.PEM
    Path(f"{args.out}.pem").write_bytes(result.certificate.public_bytes(pem))
    key_file = Path(f"{args.out}.key")
    key_file.touch(mode=0o600)
    key_file.write_bytes(
        result.private_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    Path(f"{args.out}-chain.pem").write_bytes(
        b"".join(c.public_bytes(pem) for c in result.chain + result.ca_certificates)
    )
    print(
        f"enrolled {result.certificate.subject.rfc4514_string()}"
        f" (serial {result.certificate.serial_number:x})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
