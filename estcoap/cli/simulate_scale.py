"""`estcoap simulate`'s fleet-scale options: scenarios, processes, --keys-dir, other servers.

simulate_cmd.py parses the device options and builds FleetSettings; this module adds
the options that decide how the fleet runs (scenarios.py) and runs it: a wave, a
renewal storm, a steady rate or a search for the highest sustainable one, over one or
two servers (a coaps/https mix), in one process or several.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..client.api import EST_WELL_KNOWN
from ..simulate import FleetSettings, Impairment
from ..simulate.histogram import Tally
from ..simulate.keys import KeysDirError
from ..simulate.plan import DEFAULT_SUBJECT
from ..simulate.progress import Progress
from ..simulate.report import build_report
from ..simulate.scenarios import RateStep, Scenario, Share, find_rate, prepare_keys, run
from . import CliError, UsageError, number, positive_int
from .token_options import refuse_key_uri

rate_per_second = number(float, "devices per second > 0", above=0)
milliseconds = number(float, "milliseconds > 0", above=0)
RATE_CONCURRENCY = 1000  # --rate's default bound on devices in flight
WAVE_CONCURRENCY = 50


def _rate(text: str) -> float:
    value: float = rate_per_second(text[:-2] if text.endswith("/s") else text)
    return value


def _duration_ms(text: str) -> float:
    value: float = milliseconds(text[:-2] if text.endswith("ms") else text)
    return value


def _mix(text: str) -> dict[str, int]:
    weights: dict[str, int] = {}
    for part in text.split(","):
        scheme, _, weight = part.partition("=")
        if scheme not in ("coaps", "https") or not weight.isdigit() or scheme in weights:
            raise argparse.ArgumentTypeError(f"expected coaps=N,https=M, got {text!r}")
        weights[scheme] = int(weight)
    if sum(weights.values()) != 100 or len(weights) != 2 or 0 in weights.values():
        raise argparse.ArgumentTypeError(f"the two weights must add up to 100, got {text!r}")
    return weights


def add_options(sim: argparse.ArgumentParser) -> None:
    sim.add_argument(
        "second_url", nargs="?", metavar="URL2", help="with --mix: the server of the other scheme"
    )
    group = sim.add_argument_group("scale and scenarios (docs/simulate.md)")
    group.add_argument(
        "--keys-dir",
        metavar="DIR",
        help="keep each device's key and IDevID here (made once, 0600) and the "
        "certificate it obtains; later runs reuse them",
    )
    group.add_argument(
        "--prepare-keys",
        action="store_true",
        help="make the IDevIDs of --devices devices in --keys-dir (over --processes "
        "processes) and stop: no server is contacted",
    )
    group.add_argument(
        "--processes",
        type=positive_int,
        default=1,
        metavar="N",
        help="split the fleet over N processes, one merged report",
    )
    group.add_argument(
        "--renew",
        action="store_true",
        help="a renewal storm: every device re-enrolls (sren) with the "
        "certificate an earlier run saved in --keys-dir",
    )
    group.add_argument(
        "--rate",
        type=_rate,
        metavar="N/s",
        help="start devices at this steady rate instead of all at once "
        f"(--concurrency then bounds those in flight, default {RATE_CONCURRENCY})",
    )
    group.add_argument(
        "--find-rate",
        action="store_true",
        help="raise the rate step by step until p99 passes --p99-max or a "
        "device fails; report the highest rate sustained",
    )
    group.add_argument(
        "--p99-max",
        type=_duration_ms,
        default=250.0,
        metavar="MS",
        help="--find-rate's bound on p99 latency (default 250ms)",
    )
    group.add_argument(
        "--step-seconds",
        type=number(float, "seconds >= 1", least=1),
        default=10.0,
        metavar="S",
        help="--find-rate: seconds of arrivals per step (default 10)",
    )
    group.add_argument(
        "--rate-growth",
        type=number(float, "a factor > 1", above=1),
        default=1.5,
        metavar="F",
        help="--find-rate: each step's rate is F times the last (default 1.5)",
    )
    group.add_argument(
        "--max-time",
        type=number(float, "seconds >= 1", least=1),
        default=300.0,
        metavar="S",
        help="--find-rate: stop stepping after about S seconds (default 300)",
    )
    group.add_argument(
        "--mix",
        type=_mix,
        metavar="coaps=N,https=M",
        help="split the devices between URL and URL2 by these percentages",
    )
    group.add_argument(
        "--est-root",
        metavar="PATH",
        help="the server's EST root, e.g. /est (default: discovered over "
        f"coaps, {EST_WELL_KNOWN} over https)",
    )
    group.add_argument(
        "--no-discovery",
        action="store_true",
        help=f"coaps: use {EST_WELL_KNOWN} without asking /.well-known/core",
    )
    group.add_argument(
        "--content-format",
        type=int,
        choices=(281, 287),
        default=281,
        help="coaps: ask sen for 281 (PKCS#7, default) or 287 (the certificate)",
    )
    group.add_argument(
        "--subject-template",
        default=DEFAULT_SUBJECT,
        metavar="TEXT",
        help="the CSR's subject; {serial} is the IDevID serialNumber "
        f"(default {DEFAULT_SUBJECT})",
    )


def default_concurrency(args: argparse.Namespace) -> int:
    """--concurrency unless given: 50 for a wave, 1000 in flight at most for a rate."""
    if args.concurrency is not None:
        return int(args.concurrency)
    return RATE_CONCURRENCY if (args.rate or args.find_rate) else WAVE_CONCURRENCY


def check(args: argparse.Namespace) -> None:
    """Combinations refused in one line before anything runs (exit 2)."""
    if args.second_url and not args.mix:
        raise UsageError("a second URL is for --mix coaps=N,https=M")
    if args.mix and not args.second_url:
        raise UsageError("--mix needs two URLs, a coaps:// and an https:// one")
    if args.prepare_keys and not args.keys_dir:
        raise UsageError("--prepare-keys needs --keys-dir DIR")
    refuse_key_uri("--keys-dir", args.keys_dir, "it is a directory of key files")
    if args.renew and not args.keys_dir:
        raise UsageError("--renew needs the --keys-dir of an earlier run")
    if args.find_rate and args.rate is None:
        args.rate = 10.0  # the first step
    if args.est_root is not None and not args.est_root.startswith("/"):
        raise UsageError(f"--est-root must be a path starting with /, got {args.est_root!r}")
    try:
        args.subject_template.format(serial="x")
    except (KeyError, IndexError, ValueError):
        raise UsageError("--subject-template may name only {serial}") from None


def _url(args: argparse.Namespace, url: str) -> str:
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if args.est_root is not None:
        if path:
            raise UsageError(f"give the EST root in {url} or in --est-root, not both")
        path = args.est_root.rstrip("/")
    elif args.no_discovery and parts.scheme == "coaps" and not path:
        path = EST_WELL_KNOWN
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def scenario(args: argparse.Namespace, settings: FleetSettings) -> Scenario:
    urls = [args.url] + ([args.second_url] if args.second_url else [])
    fleets: dict[str, FleetSettings] = {}
    for url in urls:
        url = _url(args, url)
        scheme = urlsplit(url).scheme
        if scheme in fleets:
            raise UsageError("--mix needs one coaps:// and one https:// URL")
        impairment = settings.impairment if scheme == "coaps" else Impairment()
        try:  # a mix impairs its coaps devices only (TCP hides loss)
            fleets[scheme] = replace(settings, url=url, impairment=impairment)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    weights = args.mix or {next(iter(fleets)): 100}
    try:
        return Scenario(
            fleets,
            weights,
            processes=args.processes,
            keys_dir=args.keys_dir,
            renew=args.renew,
            subject=args.subject_template,
            single_certificate=args.content_format == 287,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def make_keys(args: argparse.Namespace, maker: object) -> int:
    """--prepare-keys: the fleet's IDevIDs made ahead, one line saying how many."""
    try:
        made = prepare_keys(args.keys_dir, maker, args.devices, args.processes)
    except (KeysDirError, RuntimeError) as exc:
        raise CliError(str(exc)) from None
    print(f"{args.keys_dir}: {made['generated']} IDevIDs made, {made['present']} already there")
    return 0


def settings_json(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "processes": args.processes,
        "keys_dir": args.keys_dir,
        "scenario": "renewal-storm" if args.renew else "first-enrollment",
        "rate": args.rate,
        "find_rate": args.find_rate,
        "p99_max_ms": args.p99_max if args.find_rate else None,
        "mix": args.mix,
        "urls": [args.url] + ([args.second_url] if args.second_url else []),
        "est_root": args.est_root,
        "no_discovery": args.no_discovery,
        "content_format": args.content_format,
        "subject_template": args.subject_template,
    }


def execute(
    args: argparse.Namespace, settings: FleetSettings, settings_dict: dict[str, Any]
) -> tuple[Share, dict[str, Any]]:
    """Run the fleet as the options say; the merged share and its report."""
    plan = scenario(args, settings)
    concurrency = settings.concurrency
    settings_dict.update(settings_json(args))
    udp = "coaps" in plan.fleets
    try:
        if args.find_rate:
            return _find_rate(args, plan, concurrency, settings_dict, udp)
        progress = Progress(settings.devices)
        try:
            share = run(
                plan, settings.devices, concurrency, rate=args.rate, on_done=progress.update
            )
        finally:
            progress.finish()
    except KeysDirError as exc:
        raise CliError(str(exc)) from None
    except RuntimeError as exc:  # a process of the run failed: say which and why
        raise CliError(str(exc)) from None
    return share, build_report(share, settings_dict, udp=udp)


def _find_rate(
    args: argparse.Namespace,
    plan: Scenario,
    concurrency: int,
    settings: dict[str, Any],
    udp: bool,
) -> tuple[Share, dict[str, Any]]:
    def said(step: RateStep) -> None:
        if sys.stderr.isatty():
            verdict = "sustained" if step.sustained else "not sustained"
            print(
                f"rate {step.rate:.1f}/s: {step.share.tally.devices} devices, p99 "
                f"{step.p99_ms} ms, failed {sum(step.share.tally.failed.values())}: "
                f"{verdict}",
                file=sys.stderr,
            )

    steps, best = find_rate(
        plan,
        start=args.rate,
        p99_max_ms=args.p99_max,
        step_seconds=args.step_seconds,
        growth=args.rate_growth,
        time_budget=args.max_time,
        concurrency=concurrency,
        on_step=said,
    )
    merged = Share(Tally(origin=steps[0].share.tally.origin), 0.0)
    for step in steps:
        merged.merge(step.share)
    merged.wall_time = sum(step.share.wall_time for step in steps)
    report = build_report(merged, settings, udp=udp)
    report["find_rate"] = {
        "p99_max_ms": args.p99_max,
        "highest_sustained_rate": best,
        "steps": [step.to_dict() for step in steps],
        "rule": "a step is sustained when no device failed, p99 <= p99_max_ms and devices "
        "started within p99_max_ms of their slot (p99)",
    }
    return merged, report


def summary_line(report: dict[str, Any]) -> str | None:
    found = report.get("find_rate")
    if found is None:
        return None
    best = found["highest_sustained_rate"]
    bound = f"p99 <= {found['p99_max_ms']:g} ms"
    if best is None:
        first = found["steps"][0]["rate"]
        return f"no rate sustained with {bound} (the first step, {first}/s, was not)"
    return f"highest rate sustained with {bound}: {best:.1f} devices/s"
