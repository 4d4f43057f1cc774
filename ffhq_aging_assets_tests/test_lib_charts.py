import io

import PIL.Image
import pytest

from ffhq_aging_assets.lib.charts import age_gender_histogram, histogram_figure
from ffhq_aging_assets.lib.labels import AGE_GROUPS

SMALL = {"male": {"0-2": 3, "20-29": 1}, "female": {"3-6": 2, "70-120": 1}}
LARGE = {"male": {a: 1234 * (i + 1) for i, a in enumerate(AGE_GROUPS)}, "female": {"0-2": 999}}


def png(image: PIL.Image.Image) -> bytes:
    """The image encoded as age_distribution writes it."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def visible_y_labels(counts: dict[str, dict[str, int]]) -> list[str]:
    ax = histogram_figure(counts, AGE_GROUPS, "t").axes[0]
    low, high = ax.get_ylim()
    return [t.get_text() for t in ax.get_yticklabels() if low <= t.get_position()[1] <= high]


def test_the_chart_is_a_png_of_the_configured_size() -> None:
    data = png(age_gender_histogram(LARGE, AGE_GROUPS, "FFHQ-Aging: 1 image", size=(640, 360)))
    with PIL.Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        assert image.size == (640, 360)
        assert image.mode in ("RGB", "RGBA")
        assert not image.text  # no software version or date to make equal charts differ
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is not None and len(colours) > 2  # drawn on, not a blank canvas


def test_small_counts_get_unique_whole_number_ticks() -> None:
    labels = visible_y_labels(SMALL)
    assert labels == ["0", "1", "2", "3"]


def test_large_counts_get_thousands_separators() -> None:
    labels = visible_y_labels(LARGE)
    assert len(labels) == len(set(labels)) > 2
    assert all(int(label.replace(",", "")) % 1000 == 0 for label in labels)
    assert any("," in label for label in labels)
    ax = histogram_figure(LARGE, AGE_GROUPS, "t").axes[0]
    counts = {t.get_text() for t in ax.texts}
    assert "12,340" in counts and "999" in counts


def test_each_pair_of_bars_is_centred_on_its_age_group() -> None:
    ax = histogram_figure(SMALL, AGE_GROUPS, "t").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(AGE_GROUPS)
    male, female = ax.containers
    heights = {}
    for age, tick, m, f in zip(AGE_GROUPS, ax.get_xticks(), male, female, strict=True):
        assert m.get_x() + m.get_width() == pytest.approx(f.get_x())  # side by side
        assert m.get_x() + m.get_width() == pytest.approx(tick)
        heights[age] = (m.get_height(), f.get_height())
    assert heights["0-2"] == (3, 0) and heights["3-6"] == (0, 2) and heights["70-120"] == (0, 1)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["male", "female"]
    assert ax.get_title() == "t"


def test_all_zero_counts_still_render() -> None:
    assert visible_y_labels({"male": {}, "female": {}}) == ["0", "1"]
    image = age_gender_histogram({}, AGE_GROUPS, "FFHQ-Aging: 0 images")
    assert image.size == (900, 480)


def test_the_same_counts_give_the_same_bytes() -> None:
    first = png(age_gender_histogram(LARGE, AGE_GROUPS, "FFHQ-Aging: 7 images"))
    assert first == png(age_gender_histogram(LARGE, AGE_GROUPS, "FFHQ-Aging: 7 images"))
    assert first != png(age_gender_histogram(SMALL, AGE_GROUPS, "FFHQ-Aging: 7 images"))
