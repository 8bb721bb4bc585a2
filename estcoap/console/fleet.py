"""The fleet page's figures, and its chart as inline SVG (drawn here: no script needed).

Enrollments are the store's issued rows by their recording time (every process sharing
the store counts). Requests and failures are this process's answers by front
(tally.RequestTally, read on the event loop that counts into it and handed in); without
a tally (a console started on its own) they are left out. The store is read in a thread.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from html import escape

from ..ca.store import IssuedRecord, Store

HOUR = 3600
DAY = 24 * HOUR
EXPIRY_WINDOW = dt.timedelta(days=30)


@dataclass(frozen=True)
class Fleet:
    issued_hour: Counter[str]  # operation word -> certificates issued in the last hour
    issued_day: Counter[str]
    per_hour: list[int]  # issued in each of the last 24 hours, oldest first
    # (front, operation) -> answers by outcome (tally.OUTCOMES); None: not counted here
    requests_hour: dict[tuple[str, str], Counter[str]] | None
    requests_day: dict[tuple[str, str], Counter[str]] | None
    expiring: list[IssuedRecord]
    pending: int
    dtls_sessions: int | None  # None: no CoAPs front in this process


def read_store(
    store: Store,
    requests_hour: dict[tuple[str, str], Counter[str]] | None,
    requests_day: dict[tuple[str, str], Counter[str]] | None,
    dtls_sessions: int | None,
    now: dt.datetime | None = None,
) -> Fleet:
    now = now or dt.datetime.now(dt.UTC)
    day = store.issued_since(now - dt.timedelta(seconds=DAY))
    per_hour = [0] * 24
    hour: Counter[str] = Counter()
    for record in day:
        age = (now - dt.datetime.fromisoformat(record.created)).total_seconds()
        slot = min(23, max(0, int(age // HOUR)))
        per_hour[23 - slot] += 1
        if age < HOUR:
            hour[record.operation] += 1
    return Fleet(
        issued_hour=hour,
        issued_day=Counter(r.operation for r in day),
        per_hour=per_hour,
        requests_hour=requests_hour,
        requests_day=requests_day,
        expiring=store.expiring_between(now, now + EXPIRY_WINDOW),
        pending=store.pending_counts().get("pending", 0),
        dtls_sessions=dtls_sessions,
    )


def bar_chart(values: list[int], *, title: str, width: int = 720, height: int = 180) -> str:
    """Bars for the last 24 hours, oldest on the left; an SVG element with a <title>."""
    top = max(values) if any(values) else 1
    pad_left, pad_bottom, pad_top = 36, 22, 10
    plot_w, plot_h = width - pad_left - 8, height - pad_bottom - pad_top
    slot = plot_w / len(values)
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{pad_left}" y1="{pad_top + plot_h}" x2="{width - 8}" '
        f'y2="{pad_top + plot_h}" class="axis"/>',
        f'<text x="{pad_left - 6}" y="{pad_top + 8}" class="tick" text-anchor="end">{top}</text>',
        f'<text x="{pad_left - 6}" y="{pad_top + plot_h}" class="tick" text-anchor="end">0</text>',
    ]
    for i, value in enumerate(values):
        h = plot_h * value / top
        x = pad_left + i * slot + 2
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{pad_top + plot_h - h:.1f}" '
            f'width="{slot - 4:.1f}" height="{h:.1f}"><title>{value}</title></rect>'
        )
    for i, label in ((0, "-24 h"), (12, "-12 h"), (23, "now")):
        x = pad_left + i * slot + slot / 2
        parts.append(
            f'<text x="{x:.1f}" y="{height - 6}" class="tick" text-anchor="middle">{label}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
