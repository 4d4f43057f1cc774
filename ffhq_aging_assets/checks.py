"""Every per-chunk check by name, and the factory that turns ``lib.gates`` into asset checks.

The names and descriptions live here, once: the assets declare them, and the products read the
blocking ones to decide which chunks go in.
"""

from collections.abc import Iterable, Mapping

import dagster as dg

from ffhq_aging_assets.lib.gates import Gate


def gate_specs(
    asset: str, descriptions: Mapping[str, str], *, blocking: bool = True
) -> list[dg.AssetCheckSpec]:
    """Check specs declared on an asset, one per gate name."""
    return [
        dg.AssetCheckSpec(name, asset=asset, description=text, blocking=blocking)
        for name, text in descriptions.items()
    ]


def gate_results(asset: str, gates: Iterable[Gate]) -> list[dg.AssetCheckResult]:
    """Check results for gates evaluated in the asset's own step."""
    return [
        dg.AssetCheckResult(
            asset_key=asset,
            check_name=gate.name,
            passed=gate.passed,
            severity=dg.AssetCheckSeverity.ERROR if gate.blocking else dg.AssetCheckSeverity.WARN,
            description=gate.description,
            metadata=dict(gate.metadata),
        )
        for gate in gates
    ]


IMAGE_METADATA_GATES = {
    "row_count": "A row for every image the run needs (the chunk's 1,000, or the configured "
    "limit's first); the table keeps every row the JSON has for the chunk.",
    "image_numbers": "Those rows' image numbers are exactly the chunk's first ones, each once.",
    "landmarks_finite": "Every landmark, face rect and quad coordinate of those rows is finite.",
}

ALIGNMENT_GATES = {
    "geometry_valid": "Every crop geometry the run needs (the chunk's 1,000 images, or the "
    "configured limit's first) is finite, with a positive size; the table holds every image "
    "of the chunk."
}

IMAGE_GATES = {
    "image_count": "Every image of the chunk (1,000, or the configured limit) exists.",
    "image_format": "Every image decodes as an R x R RGB PNG.",
    "no_temp_files": "No temporary file of a dead writer is left in the chunk's folder or its "
    "downloaded photos (the step removes them as it starts).",
}

MASK_GATES = {
    "mask_count": "One mask per aligned image of the chunk.",
    "mask_format": "Every mask decodes as an R x R 8-bit greyscale PNG.",
    "mask_classes": "Every class id is within 0..18.",
    "no_temp_files": "No temporary file of a dead writer is left in the chunk's parsings/ (the "
    "step removes them as it starts).",
    "mask_fidelity": "Masks computed in bf16 agree with strict fp32 on 99% of the pixels of "
    "the sampled faces (fp32 masks pass: they are the published numerics).",
}

MASK_WARNINGS = {"mask_plausible": "Masks with fewer than three classes or no skin (informs)."}

LABEL_GATES = {
    "label_numbers": "Exactly the chunk's image numbers, once each.",
    "label_domains": "Every field in its domain, with the -1 rule for missing attributes.",
}

LABEL_WARNINGS = {
    "label_confidence": "Share of rows below the published confidence thresholds (informs)."
}

# The blocking gates of every per-chunk asset: a chunk reaches the products only when the
# latest evaluation of each of them, for that chunk, passed.
BLOCKING_GATES = {
    "image_metadata": IMAGE_METADATA_GATES,
    "alignments": ALIGNMENT_GATES,
    "aligned_images": IMAGE_GATES,
    "segmentation_masks": MASK_GATES,
    "labels_table": LABEL_GATES,
}
