"""The age-by-gender histogram the dataset publishes, drawn with matplotlib on an Agg canvas.

matplotlib is imported inside the functions because the Dagster definitions import this
module, and loading them (the UI, every run's process) should not pay for it. pyplot is never
used: its global figures and GUI backends do not belong in steps that run in threads and
processes without a display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import PIL.Image

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLOURS = {"male": "#4272c4", "female": "#dd6179"}
DPI = 100
BAR_WIDTH = 0.4


def histogram_figure(
    counts: Mapping[str, Mapping[str, int]],
    groups: Sequence[str],
    title: str,
    size: tuple[int, int] = (900, 480),
) -> Figure:
    """Grouped bars, per age group one bar per gender, each pair centred on its group's tick.

    Each bar is labelled with its count; the y ticks are whole numbers, with thousands
    separators as the labels are. ``size`` is in pixels.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator, StrMethodFormatter

    figure = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    slots = range(len(groups))
    for j, (gender, colour) in enumerate(COLOURS.items()):
        offset = (j - (len(COLOURS) - 1) / 2) * BAR_WIDTH
        heights = [counts.get(gender, {}).get(age, 0) for age in groups]
        bars = ax.bar([x + offset for x in slots], heights, BAR_WIDTH, label=gender, color=colour)
        ax.bar_label(bars, fmt="{:,.0f}", padding=2, fontsize=7)
    peak = max([counts.get(g, {}).get(a, 0) for g in COLOURS for a in groups] + [1])
    # Headroom for the tallest bar's count; with no images at all the axis still spans 0..1.
    ax.set_ylim(0, peak * 1.12)
    # Whole, round steps: fractional ticks rounded for display would repeat ("0, 1, 2, 2, 3").
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.set_xticks(list(slots), list(groups))
    ax.set_xlabel("age group (years)")
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False)
    return figure


def age_gender_histogram(
    counts: Mapping[str, Mapping[str, int]],
    groups: Sequence[str],
    title: str,
    size: tuple[int, int] = (900, 480),
) -> PIL.Image.Image:
    """:func:`histogram_figure` drawn by Agg: an RGB image of ``size`` pixels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(histogram_figure(counts, groups, title, size))
    canvas.draw()
    rgba = PIL.Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba())
    return rgba.convert("RGB")
