"""Turns the pure gates of ``lib.gates`` into Dagster asset checks."""

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
