"""Figures from a fleet run: the JSON report, a short text summary and the optional plot.

An "enrollment" is one device's whole flow: crts, att, sen (and sren with --reenroll).
Latency and bytes per enrollment are over the devices that succeeded, and null (None)
when none did: a zero would read as a measurement. Byte counts are UDP payloads (DTLS
records included, IP/UDP headers not) or TLS bytes on TCP. Everything comes from a
Share (scenarios.py): streamed counters and histograms, never a list per device.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .histogram import FLOOR_MS, GROWTH
from .rss import peak_rss_mib
from .scenarios import Share

REPORT_VERSION = 2  # 2: series (per second: enrollments, p99), keys, start_lateness_ms


class PlotUnavailable(Exception):
    """--plot was asked for but matplotlib is not installed."""


def build_report(share: Share, settings: dict[str, Any], *, udp: bool) -> dict[str, Any]:
    """The report of a run (or of several processes' merged shares)."""
    tally, totals = share.tally, share.totals
    wall = share.wall_time
    retrans = totals.up.retransmissions + totals.down.retransmissions
    series = tally.series(wall)
    return {
        "report_version": REPORT_VERSION,
        "settings": settings,
        "devices": tally.devices,
        "devices_by_scheme": dict(sorted(share.schemes.items())),
        "succeeded": tally.succeeded,
        "failed": dict(sorted(tally.failed.items())),
        "failed_total": sum(tally.failed.values()),
        "failure_examples": dict(sorted(tally.examples.items())),
        "wall_time_s": round(wall, 3),
        "enrollments_per_second": round(tally.succeeded / wall, 3) if wall > 0 else 0.0,
        "latency_ms": tally.latency.figures(),
        "latency_method": "nearest rank over 1 %-wide logarithmic buckets (upper edge); "
        "min, max and mean exact",
        "bytes_per_enrollment": tally.mean_traffic(udp),
        "bytes_total": {"up": totals.up.bytes, "down": totals.down.bytes},
        "datagrams_total": (
            {"up": totals.up.datagrams, "down": totals.down.datagrams} if udp else None
        ),
        "retransmissions": {
            "up": totals.up.retransmissions,
            "down": totals.down.retransmissions,
            "total": retrans,
            "per_enrollment": round(retrans / tally.succeeded, 3) if tally.succeeded else None,
            "method": (
                "relay: a datagram whose DTLS record shape repeats one its sender already "
                "sent with nothing received in between"
                if udp
                else "not observable: TCP retransmits below the application"
            ),
        },
        "device_retries": {
            "total": tally.retries,
            "devices": tally.retried_devices,
            "by_reason": dict(sorted(share.retried.items())),
        },
        "impairment_applied": {
            "dropped": {"up": totals.up.dropped, "down": totals.down.dropped},
            "duplicated": {"up": totals.up.duplicated, "down": totals.down.duplicated},
            "reordered": {"up": totals.up.reordered, "down": totals.down.reordered},
        },
        "start_lateness_ms": tally.start_lag.figures() if tally.start_lag.count else None,
        "keys": dict(share.keys) if share.keys else None,
        "peak_rss_mib": round(max(share.peak_rss_mib, peak_rss_mib()), 1),
        "throughput_per_second": [[float(r["t"]), float(r["enrollments"])] for r in series],
        "series": series,
    }


def write_json(report: dict[str, Any], path: str | Path) -> None:
    """Written whole to a temporary name, then renamed: never a half-written report."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(target)


def all_failed(report: dict[str, Any]) -> str:
    """One line for a run in which no device was provisioned."""
    failed = ", ".join(f"{k} {v}" for k, v in report["failed"].items())
    example = next(iter(report["failure_examples"].values()), None)
    first = f"; e.g. {' '.join(example.split())}" if example else ""
    return f"all {report['devices']} devices failed ({failed}){first}"


def summary(report: dict[str, Any]) -> str:
    lat, per = report["latency_ms"], report["bytes_per_enrollment"]
    failed = ", ".join(f"{k} {v}" for k, v in report["failed"].items()) or "none"
    if report["succeeded"] == 0:  # no latency or byte figure: zeros would read as results
        return "\n".join(
            [
                f"0/{report['devices']} devices provisioned: {all_failed(report)}",
                f"retransmissions: {report['retransmissions']['total']}   "
                f"peak RSS {report['peak_rss_mib']:.0f} MiB",
            ]
        )
    return "\n".join(
        [
            f"{report['succeeded']}/{report['devices']} devices provisioned in "
            f"{report['wall_time_s']:.1f} s: {report['enrollments_per_second']:.1f} enrollments/s",
            f"latency ms: p50 {lat['p50']:.0f}  p95 {lat['p95']:.0f}  p99 {lat['p99']:.0f}  "
            f"max {lat['max']:.0f}",
            f"bytes per enrollment: up {per['up']:.0f}  down {per['down']:.0f}",
            f"retransmissions: {report['retransmissions']['total']}   failed: {failed}   "
            f"peak RSS {report['peak_rss_mib']:.0f} MiB",
        ]
    )


def check_plotting() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable("--plot needs matplotlib: pip install 'estcoap[plot]'") from None


def plot(share: Share, report: dict[str, Any], path: str | Path) -> None:
    """Latency distribution, and enrollments/s with p99 over time, side by side."""
    check_plotting()
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    histogram = share.tally.latency
    edges = sorted(histogram.buckets)
    series = report["series"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    if edges:
        values = [FLOOR_MS * GROWTH**b for b in edges]
        counts = [histogram.buckets[b] for b in edges]
        widths = [v * (GROWTH - 1) for v in values]
        left.bar(values, counts, width=widths, align="edge", color="tab:blue")
        lat = report["latency_ms"]
        for name, style in (("p50", "--"), ("p95", ":"), ("p99", "-.")):
            left.axvline(
                lat[name], color="black", linestyle=style, label=f"{name} {lat[name]:.0f} ms"
            )
        left.legend()
    left.set_xlabel("enrollment latency (ms)")
    left.set_ylabel("devices")
    times = [r["t"] for r in series]
    right.plot(times, [r["per_second"] for r in series], color="tab:green")
    right.set_xlabel("time since start (s)")
    right.set_ylabel("enrollments completed per second", color="tab:green")
    p99 = right.twinx()  # the tail over time: where the server starts to fall behind
    p99.plot(times, [r["p99_ms"] for r in series], color="tab:red", linewidth=0.8)
    p99.set_ylabel("p99 latency of that second (ms)", color="tab:red")
    s = report["settings"]
    fig.suptitle(
        f"{report['succeeded']}/{report['devices']} devices, {s.get('scheme', '')}, "
        f"loss {s.get('loss', 0):g}, concurrency {s.get('concurrency', '')}"
        + (f", rate {s['rate']:g}/s" if s.get("rate") else "")
    )
    fig.tight_layout()
    fig.savefig(str(path))
    plt.close(fig)
