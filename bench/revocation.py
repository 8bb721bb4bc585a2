"""Revocation at scale: a CRL of N entries (default 100,000) and the lookups behind
enforcement, with a CA store holding that many revoked certificates.

Prints: the time to read the revocations from the store and sign the CRL (what serve does
after each revocation), the CRL's size, the time to load it (x509.load_der_x509_crl) and to
index its serials in a set, and the cost of one lookup: in that set, and through
LocalCA.revocation_of (one store read of the revocation version, then the set), for a
revoked serial and for one that is not. Figures are wall-clock on this machine.

    python3 bench/revocation.py [--entries 100000] [--lookups 200000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import secrets
import sys
import tempfile
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography import x509  # noqa: E402

from estcoap.ca import LocalCA, init_ca  # noqa: E402
from estcoap.ca.crl import build_crl, encode  # noqa: E402

REASONS = ("keyCompromise", "superseded", "cessationOfOperation", "unspecified")


def fill_store(ca: LocalCA, entries: int) -> list[int]:
    """entries issued-and-revoked rows, written in one transaction straight into the tables
    (signing that many certificates would only measure ECDSA); every row reuses the server
    certificate's DER, which the CRL path never reads."""
    template = ca.store.issued_list()[0]
    serials = [secrets.randbits(127) | 1 for _ in range(entries)]
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    db = ca.store._db
    with ca.store._lock:
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO issued (serial, subject, san, not_before, not_after, requester, label,"
            " operation, kind, cert_der, created) VALUES (?, 'CN=bench', '', ?, ?, 'bench',"
            " '', 'enroll', 'new', ?, ?)",
            [
                (format(s, "x"), template.not_before, template.not_after, template.cert_der, now)
                for s in serials
            ],
        )
        db.executemany(
            "INSERT INTO revoked (serial, reason, revoked_at, invalidity_date, revoked_by,"
            " label) VALUES (?, ?, ?, ?, 'bench', '')",
            [
                (format(s, "x"), REASONS[i % len(REASONS)], now, now if i % 2 else None)
                for i, s in enumerate(serials)
            ],
        )
        db.execute("COMMIT")
    return serials


def per_call(statement, number: int) -> float:  # type: ignore[no-untyped-def]
    """Seconds per call, the best of 5 runs."""
    return min(timeit.repeat(statement, number=number, repeat=5)) / number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=200_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        init_ca(Path(tmp) / "ca", ["127.0.0.1"])
        ca = LocalCA.open(Path(tmp) / "ca")
        try:
            started = time.perf_counter()
            serials = fill_store(ca, args.entries)
            print(
                f"store: {args.entries} revoked certificates written in "
                f"{time.perf_counter() - started:.1f} s"
            )

            started = time.perf_counter()
            revoked = ca.store.revoked_list()
            read = time.perf_counter() - started
            started = time.perf_counter()
            crl = build_crl(
                revoked,
                ca_cert=ca.ca_certificate,
                ca_key=ca._ca_key,
                number=ca.store.next_crl_number(),
            )
            der = encode(crl, pem=False)
            signed = time.perf_counter() - started
            print(
                f"CRL of {len(revoked)} entries: read from the store {read:.2f} s, "
                f"built and signed {signed:.2f} s, {len(der) / 1e6:.2f} MB DER "
                f"({len(der) / len(revoked):.0f} bytes per entry)"
            )

            started = time.perf_counter()
            loaded = x509.load_der_x509_crl(der)
            load = time.perf_counter() - started
            started = time.perf_counter()
            index = {entry.serial_number for entry in loaded}
            indexed = time.perf_counter() - started
            assert len(index) == len(revoked)
            print(f"load_der_x509_crl {load * 1e3:.1f} ms; its serials into a set {indexed:.2f} s")

            hit, miss = serials[len(serials) // 2], secrets.randbits(127)
            in_set = per_call(lambda: hit in index, args.lookups)
            not_in_set = per_call(lambda: miss in index, args.lookups)
            print(
                f"lookup in a set of {len(index)}: {in_set * 1e9:.0f} ns (revoked), "
                f"{not_in_set * 1e9:.0f} ns (not)"
            )

            started = time.perf_counter()
            assert ca.revocation_of(hit) is not None  # fills its cache of revoked serials
            warm = time.perf_counter() - started
            calls = max(args.lookups // 20, 1000)
            of_hit = per_call(lambda: ca.revocation_of(hit), calls)
            of_miss = per_call(lambda: ca.revocation_of(miss), calls)
            version = per_call(ca.store.revocation_version, calls)
            print(
                f"LocalCA.revocation_of: first call {warm * 1e3:.0f} ms (loads the "
                f"{len(index)} serials), then {of_miss * 1e6:.1f} us (not revoked), "
                f"{of_hit * 1e6:.1f} us (revoked: the record is read); of which the "
                f"revocation version read {version * 1e6:.1f} us"
            )

            pair = {hit, 1}
            small = per_call(lambda: hit in pair, args.lookups)
            print(
                f"for scale: a lookup in a set of 2: {small * 1e9:.0f} ns (set lookups "
                "are O(1): the size of the CRL does not change them)"
            )
        finally:
            ca.close()


if __name__ == "__main__":
    main()
