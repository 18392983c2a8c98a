"""Summary statistics shared by the reports (demo, benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PERCENTILES = (50, 90, 99)


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p90 and p99 of ``values``, rounded to 0.01 (None each when there are none)."""
    if len(values) == 0:
        return {f"p{p}": None for p in PERCENTILES}
    a = np.asarray(values, dtype=np.float64)
    return {f"p{p}": round(float(np.percentile(a, p)), 2) for p in PERCENTILES}
