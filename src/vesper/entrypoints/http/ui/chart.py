"""The overview's chart: finished work per minute as an inline SVG, drawn on the server
(no script, nothing to load)."""

from __future__ import annotations

import attrs

from vesper.domain.activity import Activity

WIDTH = 720
HEIGHT = 180
LEFT = 40  # room for the scale's labels
BOTTOM = 20


@attrs.frozen(kw_only=True)
class Bar:
    x: float
    width: float
    done_y: float
    done_height: float
    failed_y: float
    failed_height: float
    label: str  # the minute and its counts, as the bar's tooltip


@attrs.frozen(kw_only=True)
class Chart:
    width: int
    height: int
    left: int
    bottom: int
    peak: int  # the scale's top
    bars: tuple[Bar, ...]
    first: str  # the first and last minutes, HH:MM UTC
    last: str


def chart_of(activity: Activity) -> Chart:
    """Stacked bars, one per minute: done below, failed on top."""
    minutes = activity.minutes
    peak = max([m.done + m.failed for m in minutes] + [1])
    plot_width = WIDTH - LEFT
    plot_height = HEIGHT - BOTTOM
    step = plot_width / len(minutes)
    bars = []
    for i, m in enumerate(minutes):
        done_h = plot_height * m.done / peak
        failed_h = plot_height * m.failed / peak
        bars.append(
            Bar(
                x=round(LEFT + i * step + step * 0.1, 2),
                width=round(step * 0.8, 2),
                done_y=round(plot_height - done_h, 2),
                done_height=round(done_h, 2),
                failed_y=round(plot_height - done_h - failed_h, 2),
                failed_height=round(failed_h, 2),
                label=f"{m.minute:%H:%M} UTC: {m.done} done, {m.failed} failed",
            )
        )
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        bottom=BOTTOM,
        peak=peak,
        bars=tuple(bars),
        first=f"{minutes[0].minute:%H:%M}",
        last=f"{minutes[-1].minute:%H:%M}",
    )
