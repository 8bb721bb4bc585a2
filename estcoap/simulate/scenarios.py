"""Running a fleet the ways operators ask for, in one process or several.

* a wave: every device at once, as many in flight as --concurrency allows (the default)
* a renewal storm: every device of an earlier run re-enrolls with the LDevID it saved
* a steady arrival rate (--rate N/s): devices start on a clock, not when one finishes
* a mix: devices split over a coaps:// and an https:// server by weight
* --processes N: the fleet split over N processes (device i to process i mod N), each
  with its own event loop and relays, reporting one Tally that the parent merges

A run returns a Share: the merged Tally, the wall time, the relays' traffic totals and
the counts of retries and of keys made or loaded. Nothing in it grows with the fleet.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .fleet import DeviceOutcome, Fleet, FleetSettings
from .histogram import Tally
from .keys import KeysDir
from .plan import DEFAULT_SUBJECT, Pacer, Plan
from .relay import Counters, Traffic
from .rss import peak_rss_mib


@dataclass(frozen=True)
class Scenario:
    """How to run: the fleets by scheme (one, or two for a mix) and their weights."""

    fleets: dict[str, FleetSettings]  # scheme -> settings (url, trust, maker, ...)
    weights: dict[str, int]  # scheme -> share in percent; one scheme: {scheme: 100}
    processes: int = 1
    keys_dir: str | None = None
    renew: bool = False  # a renewal storm: sren with each device's saved LDevID
    subject: str = DEFAULT_SUBJECT
    single_certificate: bool = False

    def __post_init__(self) -> None:
        if set(self.fleets) != set(self.weights) or sum(self.weights.values()) != 100:
            raise ValueError("the mix's weights must name each URL's scheme and add up to 100")
        if self.processes < 1:
            raise ValueError("processes must be at least 1")
        if self.renew and self.keys_dir is None:
            raise ValueError("a renewal storm needs the --keys-dir of an earlier run")


@dataclass
class Share:
    tally: Tally
    wall_time: float
    totals: Traffic = field(default_factory=Traffic)
    retried: Counter[str] = field(default_factory=Counter)
    keys: Counter[str] = field(default_factory=Counter)
    peak_rss_mib: float = 0.0  # the largest of the processes'
    schemes: Counter[str] = field(default_factory=Counter)  # devices run over each

    def merge(self, other: Share) -> None:
        self.tally.merge(other.tally)
        self.peak_rss_mib = max(self.peak_rss_mib, other.peak_rss_mib)
        self.wall_time = max(self.wall_time, other.wall_time)
        self.totals.add(other.totals)
        self.retried.update(other.retried)
        self.keys.update(other.keys)
        self.schemes.update(other.schemes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tally": self.tally.to_dict(),
            "wall_time": self.wall_time,
            "totals": _traffic_dict(self.totals),
            "retried": dict(self.retried),
            "keys": dict(self.keys),
            "peak_rss_mib": self.peak_rss_mib,
            "schemes": dict(self.schemes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Share:
        return cls(
            Tally.from_dict(data["tally"]),
            data["wall_time"],
            _traffic_of(data["totals"]),
            Counter(data["retried"]),
            Counter(data["keys"]),
            data["peak_rss_mib"],
            Counter(data["schemes"]),
        )


def _traffic_dict(t: Traffic) -> dict[str, dict[str, int]]:
    return {"up": vars(t.up).copy(), "down": vars(t.down).copy()}


def _traffic_of(data: dict[str, dict[str, int]]) -> Traffic:
    return Traffic(Counters(**data["up"]), Counters(**data["down"]))


def scheme_of(index: int, weights: dict[str, int]) -> str:
    """Device `index`'s scheme: the shares come out exact over any run of 100 devices,
    interleaved (a Bresenham walk), so a mix is a mix from the first second."""
    first, *rest = sorted(weights)  # "coaps" < "https": stable whatever the order given
    if not rest:
        return first
    w = weights[first]
    return first if (index + 1) * w // 100 > index * w // 100 else rest[0]


Progress = Callable[[bool], None]


async def run_share(
    scenario: Scenario,
    share: int,
    shares: int,
    devices: int,
    concurrency: int,
    *,
    origin: float,
    rate: float | None = None,
    first_index: int = 0,
    on_done: Progress | None = None,
) -> Share:
    """This process's devices (first_index + i for i = share, share + shares, ...)."""
    keys = None
    if scenario.keys_dir is not None:
        maker = next(iter(scenario.fleets.values())).maker
        keys = KeysDir(scenario.keys_dir, maker)
    tally = Tally(origin=origin)
    pace = None
    if rate is not None:  # global slot j = share + shares*m is at origin + j/rate
        pace = Pacer(rate / shares, origin + share / rate)
    mine = range(first_index + share, first_index + devices, shares)

    def record(outcome: DeviceOutcome) -> None:
        now = time.monotonic()
        tally.add(outcome, finished=now, began=now - outcome.latency)
        if pace is not None:
            tally.start_lag.add(outcome.late * 1000.0)
        if on_done is not None:
            on_done(outcome.ok)

    runs = []
    schemes: Counter[str] = Counter()
    for scheme, settings in sorted(scenario.fleets.items()):
        # lazily, as workers take them: a list of 100,000 indices would be memory too
        count = sum(1 for i in mine if scheme_of(i, scenario.weights) == scheme)
        if not count:
            continue
        indices = mine if count == len(mine) else _of_scheme(mine, scenario.weights, scheme)
        weight = scenario.weights[scheme] / 100.0
        plan = Plan(
            indices=indices,
            idevid=keys.idevid if keys is not None else None,
            ldevid=keys.ldevid if keys is not None and scenario.renew else None,
            on_enrolled=keys.save_ldevid if keys is not None else None,
            pace=pace,
            subject=scenario.subject,
            single_certificate=scenario.single_certificate,
        )
        in_flight = max(1, math.ceil(concurrency * weight / shares))
        fleet_settings = replace(settings, devices=count, concurrency=in_flight)
        fleet = Fleet(fleet_settings, on_outcome=record, plan=plan, keep_outcomes=False)
        runs.append(fleet)
        schemes[scheme] = count
    started = time.monotonic()
    results = await asyncio.gather(*(fleet.run() for fleet in runs))
    out = Share(tally, time.monotonic() - started, schemes=schemes)
    for fleet, result in zip(runs, results, strict=True):
        out.totals.add(result.totals)
        out.retried.update(fleet.retried)
    if keys is not None:
        out.keys.update(keys.counters())
    out.peak_rss_mib = peak_rss_mib()
    return out


def run(
    scenario: Scenario,
    devices: int,
    concurrency: int,
    *,
    rate: float | None = None,
    first_index: int = 0,
    on_done: Progress | None = None,
) -> Share:
    """The whole fleet, in this process or split over scenario.processes processes."""
    origin = time.monotonic()
    shares = min(scenario.processes, devices)
    if shares == 1:
        alone = run_share(
            scenario,
            0,
            1,
            devices,
            concurrency,
            origin=origin,
            rate=rate,
            first_index=first_index,
            on_done=on_done,
        )
        return asyncio.run(alone)
    # fork: the children inherit the parsed settings (certificates, keys, a PSK list)
    # as they are; only the small merged figures travel back, through a pipe each.
    ctx = multiprocessing.get_context("fork")
    done, failed = ctx.Value("q", 0), ctx.Value("q", 0)
    children = []
    for share in range(shares):
        reader, writer = ctx.Pipe(duplex=False)
        args = (
            scenario,
            share,
            shares,
            devices,
            concurrency,
            origin,
            rate,
            first_index,
            writer,
            done,
            failed,
        )
        child = ctx.Process(target=_child, args=args, daemon=True)
        child.start()
        writer.close()
        children.append((child, reader))
    merged = Share(Tally(origin=origin), 0.0)
    seen = 0, 0
    pending = list(children)
    while pending:
        for child, reader in list(pending):
            if reader.poll(0.1 / len(pending)):
                try:
                    message = reader.recv()
                except EOFError:
                    message = {"error": f"process {child.pid} ended without a report"}
                if "error" in message:
                    _stop(children)
                    raise RuntimeError(message["error"])
                merged.merge(Share.from_dict(message))
                pending.remove((child, reader))
            elif not child.is_alive() and not reader.poll():
                _stop(children)
                raise RuntimeError(f"process {child.pid} exited with status {child.exitcode}")
        seen = _report_progress(seen, done.value, failed.value, on_done)
    for child, _ in children:
        child.join()
    merged.wall_time = time.monotonic() - origin
    merged.peak_rss_mib = max(merged.peak_rss_mib, peak_rss_mib())
    return merged


def _of_scheme(indices: range, weights: dict[str, int], scheme: str) -> Iterator[int]:
    return (i for i in indices if scheme_of(i, weights) == scheme)


def _report_progress(
    seen: tuple[int, int], done: int, failed: int, on_done: Progress | None
) -> tuple[int, int]:
    if on_done is not None:
        for _ in range(failed - seen[1]):
            on_done(False)
        for _ in range(done - failed - (seen[0] - seen[1])):
            on_done(True)
    return done, failed


def _child(
    scenario: Scenario,
    share: int,
    shares: int,
    devices: int,
    concurrency: int,
    origin: float,
    rate: float | None,
    first_index: int,
    writer: Any,
    done: Any,
    failed: Any,
) -> None:
    def count(ok: bool) -> None:
        with done.get_lock():
            done.value += 1
        if not ok:
            with failed.get_lock():
                failed.value += 1

    try:
        result = asyncio.run(
            run_share(
                scenario,
                share,
                shares,
                devices,
                concurrency,
                origin=origin,
                rate=rate,
                first_index=first_index,
                on_done=count,
            )
        )
        writer.send(result.to_dict())
    except BaseException as exc:  # the parent says what went wrong, in one line
        writer.send({"error": f"process {os.getpid()}: {type(exc).__name__}: {exc}"})
    finally:
        writer.close()


def _stop(children: Sequence[tuple[Any, Any]]) -> None:
    for child, _ in children:
        if child.is_alive():
            child.terminate()
        child.join(5)


# ---- --prepare-keys ----------------------------------------------------------------------


def prepare_keys(keys_dir: str, maker: Any, devices: int, processes: int) -> Counter[str]:
    """Make the IDevIDs of devices 0..devices-1 in keys_dir ahead of a run (those already
    there are left alone), split over `processes` processes: the CPU a run then spends
    is the devices' EST exchanges, not their manufacture."""
    shares = min(processes, devices)
    if shares == 1:
        return Counter(_make_keys(keys_dir, maker, range(devices)))
    ctx = multiprocessing.get_context("fork")  # the maker's key is inherited, not pickled
    makers = []
    for share in range(shares):
        reader, writer = ctx.Pipe(duplex=False)
        mine = range(share, devices, shares)
        child = ctx.Process(
            target=_make_keys_child, args=(keys_dir, maker, mine, writer), daemon=True
        )
        child.start()
        writer.close()
        makers.append((child, reader))
    total: Counter[str] = Counter()
    for child, reader in makers:
        try:
            message = reader.recv()
        except EOFError:
            message = {"error": f"process {child.pid} ended without a count"}
        child.join()
        if "error" in message:
            _stop(makers)
            raise RuntimeError(message["error"])
        total.update(message)
    return total


def _make_keys_child(keys_dir: str, maker: Any, indices: range, writer: Any) -> None:
    try:
        writer.send(_make_keys(keys_dir, maker, indices))
    except BaseException as exc:
        writer.send({"error": f"process {os.getpid()}: {type(exc).__name__}: {exc}"})
    finally:
        writer.close()


def _make_keys(keys_dir: str, maker: Any, indices: range) -> dict[str, int]:
    keys = KeysDir(keys_dir, maker)
    for index in indices:
        if not keys.has_idevid(index):
            keys.idevid(index)
    return {"generated": keys.generated, "present": len(indices) - keys.generated}


# ---- --find-rate -------------------------------------------------------------------------


@dataclass
class RateStep:
    rate: float
    share: Share
    p99_ms: float | None
    late_p99_ms: float | None
    sustained: bool

    def to_dict(self) -> dict[str, Any]:
        t = self.share.tally
        return {
            "rate": round(self.rate, 2),
            "devices": t.devices,
            "succeeded": t.succeeded,
            "failed": sum(t.failed.values()),
            "p99_ms": self.p99_ms,
            "start_lateness_p99_ms": self.late_p99_ms,
            "enrollments_per_second": round(t.succeeded / self.share.wall_time, 2)
            if self.share.wall_time > 0
            else 0.0,
            "sustained": self.sustained,
        }


def find_rate(
    scenario: Scenario,
    *,
    start: float,
    p99_max_ms: float,
    step_seconds: float,
    growth: float,
    time_budget: float,
    concurrency: int,
    on_step: Callable[[RateStep], None] | None = None,
) -> tuple[list[RateStep], float | None]:
    """Raise the arrival rate by `growth` each step (each lasting about step_seconds of
    arrivals) until p99 passes the bound, a device fails, or devices cannot start on time
    (started later than the bound: every allowed worker was busy); stop also when the next
    step would run past time_budget. Returns the steps and the highest sustained rate."""
    began = time.monotonic()
    steps: list[RateStep] = []
    best: float | None = None
    rate, first = start, 0
    while True:
        devices = max(1, math.ceil(rate * step_seconds))
        share = run(scenario, devices, concurrency, rate=rate, first_index=first)
        first += devices
        tally = share.tally
        p99 = tally.latency.percentile(99)
        late = tally.start_lag.percentile(99)
        sustained = (
            not tally.failed
            and p99 is not None
            and p99 <= p99_max_ms
            and (late or 0.0) <= p99_max_ms
        )
        step = RateStep(
            rate,
            share,
            None if p99 is None else round(p99, 1),
            None if late is None else round(late, 1),
            sustained,
        )
        steps.append(step)
        if on_step is not None:
            on_step(step)
        if not sustained:
            break
        best = rate
        elapsed = time.monotonic() - began
        if elapsed + share.wall_time * growth > time_budget:
            break
        rate *= growth
    return steps, best
