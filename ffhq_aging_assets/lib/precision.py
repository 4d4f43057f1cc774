"""Which precision a chunk's masks are computed in, and the record of it kept per chunk.

The published masks were computed in fp32. On CUDA the engine can run under bf16 autocast,
several times faster, but whether its masks are the published ones depends on the weights, so
``auto`` segments a sample of the chunk's faces both ways and keeps bf16 only where the two
agree on :data:`FIDELITY_BAR` of the pixels. The CPU always computes in fp32. A chunk whose
masks include bf16 ones keeps a :class:`PrecisionRecord` file; none means every mask is fp32.

No torch here: the Dagster checks read the record, and importing the definitions must stay
cheap.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ffhq_aging_assets.lib.files import atomic_write_bytes

Precision = Literal["bf16", "fp32"]
PrecisionSetting = Literal["auto", "bf16", "fp32"]
PRECISIONS: tuple[Precision, ...] = ("bf16", "fp32")
FIDELITY_BAR = 0.99  # share of pixels where bf16 masks must equal the fp32 ones


def step_precision(setting: PrecisionSetting, device_type: str) -> PrecisionSetting:
    """The precision a step on a ``device_type`` device starts from: the CPU's is fp32."""
    return setting if device_type == "cuda" else "fp32"


def fidelity_sample(count: int, wanted: int) -> list[int]:
    """Which of ``count`` faces the bf16/fp32 comparison uses: ``wanted`` of them, at most all.

    Spread over the chunk rather than its first faces.
    """
    return [int(k) for k in np.linspace(0, count - 1, max(0, min(wanted, count))).round()]


def choose_precision(agreement: float | None, bar: float = FIDELITY_BAR) -> Precision:
    """``auto``: bf16 where its masks agreed with fp32 on at least ``bar``, else fp32.

    No measurement (no faces sampled) keeps fp32: bf16 is taken only on evidence.
    """
    return "bf16" if agreement is not None and agreement >= bar else "fp32"


def search_pays(precision: str) -> bool:
    """Whether cuDNN's algorithm search pays for itself within a chunk, by precision.

    Measured on an H200 (docs/benchmarks.md): in bf16 the search costs well under a second;
    in strict fp32 it took 34-42 s on the first batch of a chunk, far more than a
    1,000-face chunk can win back.
    """
    return precision == "bf16"


@dataclass(frozen=True)
class PrecisionRecord:
    """What a chunk's masks are: fp32 (the published numerics), or some computed in bf16.

    For bf16, ``agreement`` is the lowest pixel agreement with fp32 measured by any bf16 step
    whose masks are still there (None: the comparison was switched off) and ``sampled`` the
    most faces such a step compared.
    """

    precision: Precision = "fp32"
    agreement: float | None = None
    sampled: int = 0


ALL_FP32 = PrecisionRecord()


def merge_precision_record(
    previous: PrecisionRecord, precision: Precision, agreement: float | None, sampled: int
) -> PrecisionRecord:
    """What a chunk's masks are after a step computes some in ``precision``.

    A bf16 step keeps the lowest agreement measured by any bf16 step whose masks remain; an
    fp32 step leaves an earlier bf16 record standing, since those masks remain.
    """
    if precision == "fp32":
        return previous
    if previous.precision == "bf16" and previous.agreement is not None:
        agreement = previous.agreement if agreement is None else min(agreement, previous.agreement)
        sampled = max(sampled, previous.sampled)
    return PrecisionRecord("bf16", agreement, sampled)


def read_precision_record(path: Path) -> PrecisionRecord:
    """A chunk's precision record; :data:`ALL_FP32` where there is none.

    A file that is not such a record raises ``ValueError`` naming it.
    """
    if not path.is_file():
        return ALL_FP32
    try:
        raw = json.loads(path.read_text())
        if raw.get("precision") not in PRECISIONS:
            raise ValueError(f"precision {raw.get('precision')!r}")
        agreement, sampled = raw.get("agreement"), raw.get("sampled", 0)
        if agreement is not None and not isinstance(agreement, (int, float)):
            raise ValueError(f"agreement {agreement!r}")
        if not isinstance(sampled, int):
            raise ValueError(f"sampled {sampled!r}")
        return PrecisionRecord(
            raw["precision"], None if agreement is None else float(agreement), sampled
        )
    except (ValueError, AttributeError) as exc:
        raise ValueError(
            f"{path}: unreadable precision record ({exc}); delete it together with the "
            "chunk's parsings/ to recompute the masks"
        ) from exc


def write_precision_record(path: Path, record: PrecisionRecord) -> None:
    """Store a chunk's precision record (temporary name, then rename); fp32 removes it."""
    if record.precision == "fp32":
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(asdict(record)).encode())
