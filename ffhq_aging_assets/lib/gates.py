"""Data-quality gates as pure functions: each returns a :class:`Gate` saying pass or fail and why.

The Dagster checks in ``ffhq_aging_assets.checks`` are thin wrappers around these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ffhq_aging_assets.lib.precision import FIDELITY_BAR, PrecisionRecord

_SHOW = 10


@dataclass(frozen=True)
class Gate:
    """The outcome of one gate."""

    name: str
    passed: bool
    description: str
    metadata: dict[str, float | int | str] = field(default_factory=dict)
    blocking: bool = True


def _some(values: Sequence[int]) -> str:
    shown = ", ".join(f"{v:05d}" for v in values[:_SHOW])
    return shown + (f" and {len(values) - _SHOW} more" if len(values) > _SHOW else "")


def row_count(name: str, found: int, expected: int) -> Gate:
    """Exactly ``expected`` rows."""
    ok = found == expected
    what = f"{found} rows" + ("" if ok else f", expected {expected}")
    return Gate(name, ok, what, {"rows": found, "expected": expected})


def exact_numbers(name: str, found: Sequence[int], expected: range) -> Gate:
    """Image numbers are exactly ``expected``, each once."""
    seen = np.asarray(found, dtype=np.int64)
    values, counts = np.unique(seen, return_counts=True)
    duplicates = values[counts > 1].tolist()
    missing = sorted(set(expected) - set(values.tolist()))
    extra = sorted(set(values.tolist()) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing {_some(missing)}")
    if extra:
        problems.append(f"unexpected {_some(extra)}")
    if duplicates:
        problems.append(f"duplicated {_some(duplicates)}")
    span = f"{expected[0]:05d}..{expected[-1]:05d}" if len(expected) else "none"
    return Gate(
        name,
        not problems,
        "; ".join(problems) if problems else f"image numbers are exactly {span}",
        {"missing": len(missing), "unexpected": len(extra), "duplicated": len(duplicates)},
    )


def all_finite(name: str, numbers: Sequence[int], values: np.ndarray, what: str) -> Gate:
    """Every row of ``values`` (one row per image) is finite."""
    bad_rows = ~np.isfinite(values.reshape(len(numbers), -1)).all(axis=1) if len(numbers) else []
    bad = [int(n) for n, b in zip(numbers, bad_rows, strict=True) if b]
    if bad:
        return Gate(name, False, f"{what} not finite for {_some(bad)}", {"bad_images": len(bad)})
    return Gate(name, True, f"{what} finite for all {len(numbers)} images", {"bad_images": 0})


def geometry_valid(name: str, numbers: Sequence[int], qsize: np.ndarray, quads: np.ndarray) -> Gate:
    """Every crop geometry is finite with a positive size."""
    ok = np.isfinite(quads.reshape(len(numbers), -1)).all(axis=1) & np.isfinite(qsize) & (qsize > 0)
    bad = [int(n) for n, good in zip(numbers, ok, strict=True) if not good]
    if bad:
        return Gate(name, False, f"no valid crop for {_some(bad)}", {"bad_images": len(bad)})
    return Gate(
        name, True, f"finite crop geometry for all {len(numbers)} images", {"bad_images": 0}
    )


def images_valid(name: str, bad: Sequence[int], total: int, what: str) -> Gate:
    """No image of the chunk is invalid."""
    if bad:
        return Gate(name, False, f"{what}: {_some(list(bad))}", {"bad_images": len(bad)})
    return Gate(name, True, f"all {total} images pass", {"bad_images": 0})


def no_leftovers(name: str, leftovers: Sequence[str]) -> Gate:
    """No temporary files were left behind."""
    if leftovers:
        shown = ", ".join(leftovers[:_SHOW])
        return Gate(
            name,
            False,
            f"{len(leftovers)} temporary files left: {shown}",
            {"temp_files": len(leftovers)},
        )
    return Gate(name, True, "no temporary files", {"temp_files": 0})


def class_range(name: str, numbers: Sequence[int], max_class: np.ndarray, limit: int) -> Gate:
    """Every mask's class ids are within 0..limit."""
    bad = [int(n) for n, m in zip(numbers, max_class, strict=True) if m > limit]
    if bad:
        return Gate(
            name, False, f"class ids above {limit} in {_some(bad)}", {"bad_images": len(bad)}
        )
    return Gate(
        name, True, f"class ids within 0..{limit} in all {len(numbers)} masks", {"bad_images": 0}
    )


def suspicious_masks(
    name: str, numbers: Sequence[int], classes_present: np.ndarray, skin_fraction: np.ndarray
) -> Gate:
    """Warns about masks with fewer than three classes or no skin at all (informational)."""
    few = [int(n) for n, c in zip(numbers, classes_present, strict=True) if c < 3]
    no_skin = [int(n) for n, s in zip(numbers, skin_fraction, strict=True) if s <= 0]
    problems = []
    if few:
        problems.append(f"fewer than 3 classes: {_some(few)}")
    if no_skin:
        problems.append(f"no skin: {_some(no_skin)}")
    return Gate(
        name,
        not problems,
        "; ".join(problems) or "every mask has skin and 3+ classes",
        {"few_classes": len(few), "no_skin": len(no_skin)},
        blocking=False,
    )


def messages(name: str, errors: Sequence[str], what: str, *, blocking: bool = True) -> Gate:
    """No error messages (each names a line, column and value)."""
    if errors:
        shown = "; ".join(errors[:_SHOW]) + (
            f"; and {len(errors) - _SHOW} more" if len(errors) > _SHOW else ""
        )
        return Gate(name, False, shown, {"errors": len(errors)}, blocking=blocking)
    return Gate(name, True, f"every {what} is valid", {"errors": 0}, blocking=blocking)


def low_share(name: str, below: int, total: int, limit: float, what: str) -> Gate:
    """Warns when more than ``limit`` of the rows fall below a threshold (informational)."""
    share = below / total if total else 0.0
    return Gate(
        name,
        share <= limit,
        f"{share:.1%} of rows {what} (warning above {limit:.0%})",
        {"share": round(share, 4), "rows_below": below},
        blocking=False,
    )


def mask_fidelity(name: str, record: PrecisionRecord, bar: float = FIDELITY_BAR) -> Gate:
    """Masks computed in bf16 agree with strict fp32 masks on at least ``bar`` of the pixels.

    ``record`` is what the segmentation step keeps per chunk; fp32 masks (the CPU path or
    ``precision: fp32``) are the published numerics.
    """
    if record.precision == "fp32":
        return Gate(name, True, "every mask computed in fp32, the published numerics", {})
    if record.agreement is None:
        return Gate(name, True, "bf16 masks; the comparison with fp32 was switched off", {})
    agreement = record.agreement
    meta: dict[str, float | int | str] = {
        "agreement": round(agreement, 5),
        "sampled_faces": record.sampled,
    }
    if agreement >= bar:
        text = f"bf16 masks agree with fp32 on {agreement:.2%} of pixels (bar {bar:.0%})"
        return Gate(name, True, text, meta)
    return Gate(
        name,
        False,
        f"bf16 masks agree with fp32 on only {agreement:.2%} of the pixels of "
        f"{record.sampled} sampled faces (bar {bar:.0%}): these are not the published "
        "masks; delete this chunk's parsings/ and rerun with precision fp32",
        meta,
    )
