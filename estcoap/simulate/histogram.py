"""Streaming figures for a fleet run: memory that does not grow with the number of devices.

A run of 100,000 devices cannot keep one record per device. Each outcome is folded,
as it arrives, into a Tally: counters, a latency histogram with logarithmic buckets
(1 % wide, so a percentile is within 1 % of the exact nearest-rank value), and one
small histogram per second of the run for the series over time. Tallies from several
processes (or from the coaps and https halves of a mix) merge by adding buckets, and
travel between processes as plain JSON-able dicts.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

GROWTH = 1.01  # each bucket is 1 % wider than the previous one
_LOG_GROWTH = math.log(GROWTH)
FLOOR_MS = 0.01  # everything faster lands in bucket 0


def _bucket(ms: float) -> int:
    return 0 if ms <= FLOOR_MS else 1 + int(math.log(ms / FLOOR_MS) / _LOG_GROWTH)


def _bucket_value(bucket: int) -> float:
    """The upper edge of a bucket: a percentile never reads faster than it was."""
    return FLOOR_MS * GROWTH**bucket


@dataclass
class Histogram:
    """Latencies in milliseconds; exact count, sum, min and max, bucketed percentiles."""

    buckets: Counter[int] = field(default_factory=Counter)
    count: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = 0.0

    def add(self, ms: float) -> None:
        self.buckets[_bucket(ms)] += 1
        self.count += 1
        self.total += ms
        self.low = min(self.low, ms)
        self.high = max(self.high, ms)

    def merge(self, other: Histogram) -> None:
        self.buckets.update(other.buckets)
        self.count += other.count
        self.total += other.total
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)

    def percentile(self, p: float) -> float | None:
        """Nearest rank (p in 0..100), to the bucket's upper edge, within [min, max]."""
        if not self.count:
            return None
        rank = max(1, math.ceil(p / 100.0 * self.count))
        seen = 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen >= rank:
                return min(max(_bucket_value(bucket), self.low), self.high)
        return self.high

    def figures(self) -> dict[str, float | None]:
        """p50/p95/p99/max/min/mean in ms, rounded; each None when empty (not a zero)."""
        if not self.count:
            return dict.fromkeys(("p50", "p95", "p99", "max", "min", "mean"))
        return {
            "p50": round(self.percentile(50) or 0.0, 1),
            "p95": round(self.percentile(95) or 0.0, 1),
            "p99": round(self.percentile(99) or 0.0, 1),
            "max": round(self.high, 1),
            "min": round(self.low, 1),
            "mean": round(self.total / self.count, 1),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "buckets": {str(k): v for k, v in self.buckets.items()},
            "count": self.count,
            "total": self.total,
            "low": self.low if self.count else None,
            "high": self.high,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Histogram:
        low = data["low"]
        return cls(
            Counter({int(k): v for k, v in data["buckets"].items()}),
            data["count"],
            data["total"],
            math.inf if low is None else low,
            data["high"],
        )


# Traffic of the devices that succeeded, summed: the report's per-enrollment means.
_TRAFFIC = ("up_bytes", "down_bytes", "up_datagrams", "down_datagrams")


@dataclass
class Tally:
    """Everything the report says about the devices, folded in one outcome at a time.

    Times are seconds since `origin` (time.monotonic() of the run's start, which the
    processes of one run share: CLOCK_MONOTONIC is system-wide)."""

    origin: float = 0.0
    devices: int = 0
    succeeded: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # one message per reason
    latency: Histogram = field(default_factory=Histogram)
    traffic: Counter[str] = field(default_factory=Counter)
    retries: int = 0  # steps repeated
    retried_devices: int = 0
    # per second of the run (by completion): enrollments and their latency
    seconds: dict[int, Histogram] = field(default_factory=dict)
    started: Counter[int] = field(default_factory=Counter)  # devices started, per second
    start_lag: Histogram = field(default_factory=Histogram)  # paced runs: late starts (ms)

    def add(self, outcome: Any, *, finished: float, began: float | None = None) -> None:
        """One device's outcome (fleet.DeviceOutcome); `finished`/`began` are monotonic."""
        self.devices += 1
        if began is not None:
            self.started[int(began - self.origin)] += 1
        if outcome.retries:
            self.retries += outcome.retries
            self.retried_devices += 1
        if not outcome.ok:
            reason = outcome.reason or "unknown"
            self.failed[reason] += 1
            self.examples.setdefault(reason, outcome.detail)
            return
        self.succeeded += 1
        ms = outcome.latency * 1000.0
        self.latency.add(ms)
        second = max(0, int(finished - self.origin))
        self.seconds.setdefault(second, Histogram()).add(ms)
        t = outcome.traffic
        self.traffic.update(
            {
                "up_bytes": t.up.bytes,
                "down_bytes": t.down.bytes,
                "up_datagrams": t.up.datagrams,
                "down_datagrams": t.down.datagrams,
            }
        )

    def merge(self, other: Tally) -> None:
        self.devices += other.devices
        self.succeeded += other.succeeded
        self.failed.update(other.failed)
        for reason, text in other.examples.items():
            self.examples.setdefault(reason, text)
        self.latency.merge(other.latency)
        self.traffic.update(other.traffic)
        self.retries += other.retries
        self.retried_devices += other.retried_devices
        shift = max(0, round(other.origin - self.origin))  # a later run (a --find-rate step)
        for second, histogram in other.seconds.items():
            self.seconds.setdefault(second + shift, Histogram()).merge(histogram)
        self.started.update({second + shift: n for second, n in other.started.items()})
        self.start_lag.merge(other.start_lag)

    def series(self, wall_time: float, interval: int = 1) -> list[dict[str, Any]]:
        """Per interval of the run: enrollments completed, their rate and p99 (ms)."""
        last = max(int(wall_time), max(self.seconds, default=0))
        rows = []
        for begin in range(0, last + 1, interval):
            merged = Histogram()
            for second in range(begin, begin + interval):
                if second in self.seconds:
                    merged.merge(self.seconds[second])
            p99 = merged.percentile(99)
            rows.append(
                {
                    "t": begin,
                    "enrollments": merged.count,
                    "per_second": round(merged.count / interval, 3),
                    "p99_ms": None if p99 is None else round(p99, 1),
                    "started": sum(self.started.get(s, 0) for s in range(begin, begin + interval)),
                }
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "devices": self.devices,
            "succeeded": self.succeeded,
            "failed": dict(self.failed),
            "examples": self.examples,
            "latency": self.latency.to_dict(),
            "traffic": dict(self.traffic),
            "retries": self.retries,
            "retried_devices": self.retried_devices,
            "seconds": {str(k): v.to_dict() for k, v in self.seconds.items()},
            "started": {str(k): v for k, v in self.started.items()},
            "start_lag": self.start_lag.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tally:
        return cls(
            origin=data["origin"],
            devices=data["devices"],
            succeeded=data["succeeded"],
            failed=Counter(data["failed"]),
            examples=dict(data["examples"]),
            latency=Histogram.from_dict(data["latency"]),
            traffic=Counter(data["traffic"]),
            retries=data["retries"],
            retried_devices=data["retried_devices"],
            seconds={int(k): Histogram.from_dict(v) for k, v in data["seconds"].items()},
            started=Counter({int(k): v for k, v in data["started"].items()}),
            start_lag=Histogram.from_dict(data["start_lag"]),
        )

    def mean_traffic(self, udp: bool) -> dict[str, float | None]:
        """Mean bytes (and datagrams over UDP) per succeeded device; None when none did."""
        keys = ["up", "down", "total"] + (["datagrams_up", "datagrams_down"] if udp else [])
        if not self.succeeded:
            return dict.fromkeys(keys)
        n = self.succeeded
        up = round(self.traffic["up_bytes"] / n, 1)
        down = round(self.traffic["down_bytes"] / n, 1)
        figures: dict[str, float | None] = {"up": up, "down": down, "total": round(up + down, 1)}
        if udp:
            figures["datagrams_up"] = round(self.traffic["up_datagrams"] / n, 2)
            figures["datagrams_down"] = round(self.traffic["down_datagrams"] / n, 2)
        return figures
