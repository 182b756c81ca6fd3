"""Percentiles, the one way every ridectl measurement reports them."""

from __future__ import annotations

from collections.abc import Sequence


def percentile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank q-quantile (0 <= q <= 1) of values already sorted; 0.0 if none."""
    if not ordered:
        return 0.0
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])
