"""Figures from a fleet run: the JSON report, a short text summary and the optional plot.

An "enrollment" is one device's whole flow: crts, att, sen (and sren with --reenroll).
Latency and bytes per enrollment are over the devices that succeeded, and null (None)
when none did: a zero would read as a measurement. Byte counts are UDP payloads (DTLS
records included, IP/UDP headers not) or TLS bytes on TCP.
"""

from __future__ import annotations

import json
import math
import resource
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from .fleet import DeviceOutcome, FleetResult

REPORT_VERSION = 1


class PlotUnavailable(Exception):
    """--plot was asked for but matplotlib is not installed."""


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (p in 0..100); 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _mean(values: list[int]) -> float:
    return sum(values) / len(values) if values else 0.0


def latency_figures(latencies: list[float]) -> dict[str, float | None]:
    """Percentiles, extremes and mean of ascending latencies (ms); each None when empty."""
    if not latencies:
        return dict.fromkeys(("p50", "p95", "p99", "max", "min", "mean"))
    return {
        "p50": round(percentile(latencies, 50), 1),
        "p95": round(percentile(latencies, 95), 1),
        "p99": round(percentile(latencies, 99), 1),
        "max": round(latencies[-1], 1),
        "min": round(latencies[0], 1),
        "mean": round(sum(latencies) / len(latencies), 1),
    }


def bytes_per_device(good: list[DeviceOutcome], udp: bool) -> dict[str, float | None]:
    """Mean bytes (and datagrams over UDP) per succeeded device; each None when none did."""
    keys = ["up", "down", "total"] + (["datagrams_up", "datagrams_down"] if udp else [])
    if not good:
        return dict.fromkeys(keys)
    up = round(_mean([o.traffic.up.bytes for o in good]), 1)
    down = round(_mean([o.traffic.down.bytes for o in good]), 1)
    figures: dict[str, float | None] = {"up": up, "down": down, "total": round(up + down, 1)}
    if udp:
        figures["datagrams_up"] = round(_mean([o.traffic.up.datagrams for o in good]), 2)
        figures["datagrams_down"] = round(_mean([o.traffic.down.datagrams for o in good]), 2)
    return figures


def throughput_series(outcomes: list[DeviceOutcome], wall_time: float) -> list[list[float]]:
    """[second, enrollments completed in that second] for each second of the run."""
    bins = [0] * (int(wall_time) + 1)
    for o in outcomes:
        if o.ok:
            bins[min(int(o.started + o.latency), len(bins) - 1)] += 1
    return [[float(i), float(n)] for i, n in enumerate(bins)]


def build_report(result: FleetResult, settings: dict[str, Any]) -> dict[str, Any]:
    good = [o for o in result.outcomes if o.ok]
    bad = [o for o in result.outcomes if not o.ok]
    latencies = sorted(o.latency * 1000.0 for o in good)
    reasons = Counter(o.reason or "unknown" for o in bad)
    examples: dict[str, str] = {}
    for o in bad:
        examples.setdefault(o.reason or "unknown", o.detail)
    udp = result.settings.scheme == "coaps"
    totals = result.totals
    retrans = totals.up.retransmissions + totals.down.retransmissions
    return {
        "report_version": REPORT_VERSION,
        "settings": settings,
        "devices": len(result.outcomes),
        "succeeded": len(good),
        "failed": dict(sorted(reasons.items())),
        "failed_total": len(bad),
        "failure_examples": examples,
        "wall_time_s": round(result.wall_time, 3),
        "enrollments_per_second": round(len(good) / result.wall_time, 3)
        if result.wall_time > 0
        else 0.0,
        "latency_ms": latency_figures(latencies),
        "bytes_per_enrollment": bytes_per_device(good, udp),
        "bytes_total": {"up": totals.up.bytes, "down": totals.down.bytes},
        "datagrams_total": (
            {"up": totals.up.datagrams, "down": totals.down.datagrams} if udp else None
        ),
        "retransmissions": {
            "up": totals.up.retransmissions,
            "down": totals.down.retransmissions,
            "total": retrans,
            "per_enrollment": round(retrans / len(good), 3) if good else None,
            "method": (
                "relay: a datagram whose DTLS record shape repeats one its sender already "
                "sent with nothing received in between"
                if udp
                else "not observable: TCP retransmits below the application"
            ),
        },
        "device_retries": {
            "total": sum(o.retries for o in result.outcomes),
            "devices": sum(1 for o in result.outcomes if o.retries),
            "by_reason": dict(sorted(result.retried.items())),
        },
        "impairment_applied": {
            "dropped": {"up": totals.up.dropped, "down": totals.down.dropped},
            "duplicated": {"up": totals.up.duplicated, "down": totals.down.duplicated},
            "reordered": {"up": totals.up.reordered, "down": totals.down.reordered},
        },
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "throughput_per_second": throughput_series(result.outcomes, result.wall_time),
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
        raise PlotUnavailable(
            "--plot needs matplotlib: pip install 'estcoap[plot]'"
        ) from None


def plot(result: FleetResult, report: dict[str, Any], path: str | Path) -> None:
    """Latency distribution and throughput over time, side by side, in one image."""
    check_plotting()
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    latencies = [o.latency * 1000.0 for o in result.outcomes if o.ok]
    series = report["throughput_per_second"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.hist(latencies or [0.0], bins=50, color="tab:blue")
    left.set_xlabel("enrollment latency (ms)")
    left.set_ylabel("devices")
    lat = report["latency_ms"]
    if latencies:  # no device succeeded: no percentile to mark
        for name, style in (("p50", "--"), ("p95", ":"), ("p99", "-.")):
            left.axvline(
                lat[name], color="black", linestyle=style, label=f"{name} {lat[name]:.0f} ms"
            )
        left.legend()
    right.plot([t for t, _ in series], [n for _, n in series], color="tab:green")
    right.set_xlabel("time since start (s)")
    right.set_ylabel("enrollments completed per second")
    s = report["settings"]
    fig.suptitle(
        f"{report['succeeded']}/{report['devices']} devices, {s.get('scheme', '')}, "
        f"loss {s.get('loss', 0):g}, concurrency {s.get('concurrency', '')}"
    )
    fig.tight_layout()
    fig.savefig(str(path))
    plt.close(fig)
