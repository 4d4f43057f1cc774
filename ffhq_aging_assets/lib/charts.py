"""The age-by-gender histogram the dataset publishes, drawn with Pillow alone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import PIL.Image
import PIL.ImageDraw

COLOURS = {"male": (66, 114, 196), "female": (221, 97, 121)}


def age_gender_histogram(
    counts: Mapping[str, Mapping[str, int]],
    groups: Sequence[str],
    title: str,
    size: tuple[int, int] = (900, 480),
) -> PIL.Image.Image:
    """Grouped bars: for each age group, one bar per gender, labelled with its count."""
    width, height = size
    img = PIL.Image.new("RGB", size, "white")
    draw = PIL.ImageDraw.Draw(img)
    left, right, top, bottom = 60, 20, 50, 60
    peak = max([counts.get(g, {}).get(a, 0) for g in COLOURS for a in groups] + [1])
    slot = (width - left - right) / len(groups)
    bar = slot * 0.38
    draw.text((left, 15), title, fill="black")
    draw.line([(left, height - bottom), (width - right, height - bottom)], fill="black")
    draw.line([(left, top), (left, height - bottom)], fill="black")
    for k in range(5):
        value = peak * k / 4
        y = height - bottom - (height - top - bottom) * k / 4
        draw.line([(left - 4, y), (left, y)], fill="black")
        draw.text((5, y - 6), f"{value:,.0f}", fill="black")
    for i, age in enumerate(groups):
        x0 = left + i * slot + slot * 0.12
        for j, (gender, colour) in enumerate(COLOURS.items()):
            n = counts.get(gender, {}).get(age, 0)
            h = (height - top - bottom) * n / peak
            x = x0 + j * bar
            draw.rectangle([x, height - bottom - h, x + bar - 2, height - bottom], fill=colour)
            draw.text((x, height - bottom - h - 12), str(n), fill="black")
        draw.text((x0, height - bottom + 8), age, fill="black")
    for j, (gender, colour) in enumerate(COLOURS.items()):
        draw.rectangle([width - 150, 15 + j * 16, width - 138, 27 + j * 16], fill=colour)
        draw.text((width - 132, 15 + j * 16), gender, fill="black")
    return img
