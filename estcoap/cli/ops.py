"""`--metrics HOST:PORT` for serve, gateway and proxy (estcoap.observe; docs/operations.md).

The commands call begin() once they have built their service, front_hook() for each
front they start, watch() with what each start returned, and listen() when all is up.
Without --metrics all of it does nothing: the fronts keep their no-op hooks.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..observe.hooks import NO_HOOK, RequestHook
from . import CliError


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics (/metrics) and health (/healthz, /readyz) over plain "
        "HTTP here; bind it where only the monitoring reaches (docs/operations.md)",
    )


def begin(args: argparse.Namespace) -> Any:
    """The process's Operations (None without --metrics), kept on args for the starters."""
    operations = None
    if getattr(args, "metrics", None):
        from ..observe.wiring import Operations  # prometheus_client only when asked for

        operations = Operations()
    args.operations = operations
    return operations


def front_hook(args: argparse.Namespace, front: str) -> RequestHook:
    operations = getattr(args, "operations", None)
    return operations.front(front) if operations is not None else NO_HOOK


def watch(args: argparse.Namespace, method: str, *things: Any) -> None:
    """operations.watch_<method>(thing) for each thing, when --metrics is on."""
    operations = getattr(args, "operations", None)
    if operations is not None:
        for thing in things:
            getattr(operations, f"watch_{method}")(thing)


async def listen(args: argparse.Namespace) -> list[Any]:
    """Start the metrics and health listener; [] without --metrics."""
    operations = getattr(args, "operations", None)
    if operations is None:
        return []
    from .serve_cmd import listen_error, parse_host_port

    bind = parse_host_port(args.metrics, "--metrics")
    try:
        server = await operations.start(*bind)
    except OSError as exc:
        raise listen_error([bind], "tcp", exc) from None
    except ValueError as exc:
        raise CliError(f"--metrics: {exc}") from None
    print(f"serving metrics and health on {server.url}/metrics", flush=True)
    return [server]


def watch_certificate_files(args: argparse.Namespace, **files: str | None) -> None:
    """The expiry of certificates given as files (name=path; None: not in use)."""
    operations = getattr(args, "operations", None)
    if operations is not None:
        for name, path in files.items():
            if path:
                operations.watch_certificate_file(name, path)
