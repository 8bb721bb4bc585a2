"""The simulator's streaming figures: percentiles close to exact, merges that add up."""

from __future__ import annotations

import math
import random

from estcoap.simulate.histogram import Histogram, Tally
from estcoap.simulate.relay import Traffic
from estcoap.simulate.scenarios import Share, scheme_of


def exact(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def test_percentiles_within_one_percent_of_nearest_rank() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(5, 1.2) for _ in range(20_000)] + [0.0, 0.004]
    histogram = Histogram()
    for v in values:
        histogram.add(v)
    for p in (1, 50, 95, 99, 99.9, 100):
        got, want = histogram.percentile(p), exact(values, p)
        assert got is not None
        assert want <= got <= max(want * 1.01, 0.01), (p, got, want)  # never reads faster
    figures = histogram.figures()
    assert figures["max"] == round(max(values), 1) and figures["min"] == 0.0
    assert figures["mean"] == round(sum(values) / len(values), 1)


def test_an_empty_histogram_has_no_figures() -> None:
    assert Histogram().percentile(99) is None
    assert set(Histogram().figures().values()) == {None}


def test_merged_halves_equal_the_whole_and_survive_json() -> None:
    rng = random.Random(3)
    values = [rng.uniform(1, 5000) for _ in range(5000)]
    whole, left, right = Histogram(), Histogram(), Histogram()
    for i, v in enumerate(values):
        whole.add(v)
        (left if i % 2 else right).add(v)
    left = Histogram.from_dict(left.to_dict())
    left.merge(Histogram.from_dict(right.to_dict()))
    assert left.buckets == whole.buckets and left.count == whole.count
    assert left.figures() == whole.figures()


class Outcome:
    def __init__(self, ok: bool, latency: float, reason: str | None = None) -> None:
        self.ok, self.latency, self.reason = ok, latency, reason
        self.detail = f"{reason} happened" if reason else ""
        self.retries = 1 if reason == "timeout" else 0
        self.traffic = Traffic()
        self.traffic.up.bytes, self.traffic.down.bytes = 1000, 2000


def test_tallies_of_two_processes_merge_into_the_run() -> None:
    a, b = Tally(origin=100.0), Tally(origin=100.0)
    a.add(Outcome(True, 0.2), finished=100.5, began=100.3)
    a.add(Outcome(False, 1.0, "timeout"), finished=102.2)
    b.add(Outcome(True, 0.4), finished=102.7)
    b.add(Outcome(False, 1.0, "rejected-4.03"), finished=103.0)
    merged = Share.from_dict(Share(Tally(origin=100.0), 0.0).to_dict())
    for tally in (a, b):
        merged.merge(Share(Tally.from_dict(tally.to_dict()), 3.0))
    t = merged.tally
    assert (t.devices, t.succeeded) == (4, 2)
    assert t.failed == {"timeout": 1, "rejected-4.03": 1}
    assert t.examples["timeout"] == "timeout happened" and t.retries == 1
    assert t.mean_traffic(udp=False) == {"up": 1000.0, "down": 2000.0, "total": 3000.0}
    rows = t.series(3.0)
    assert [r["enrollments"] for r in rows] == [1, 0, 1, 0]
    assert rows[0]["p99_ms"] is not None and rows[1]["p99_ms"] is None


def test_a_mix_is_split_exactly_and_interleaved() -> None:
    weights = {"coaps": 70, "https": 30}
    schemes = [scheme_of(i, weights) for i in range(1000)]
    assert schemes.count("coaps") == 700
    assert all(3 <= schemes[i : i + 10].count("coaps") for i in range(0, 990, 10))
    assert {scheme_of(i, {"https": 100}) for i in range(10)} == {"https"}
