"""The few statistics the bench reports: percentiles of samples, and median/min/max across repetitions."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), interpolating between the closest ranks; NaN for no values."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside 0-100")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max), the way each figure is reported; NaNs for no values."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan, math.nan, math.nan
    return percentile(finite, 50.0), min(finite), max(finite)


def ratio(b: float, a: float) -> float:
    """b / a, NaN when either is missing or a is zero."""
    if math.isnan(a) or math.isnan(b) or a == 0.0:
        return math.nan
    return b / a
