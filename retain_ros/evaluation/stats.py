"""Small statistics for evaluation rollouts: binomial confidence intervals and percentiles.

Pure Python (no numpy needed), so the episode recorder and the report stay cheap to import.
"""
from __future__ import annotations

import logging
import math
from typing import Dict
from typing import Iterable
from typing import Optional
from typing import Sequence
from typing import Tuple

LOG = logging.getLogger(__name__)

#: two-sided 95% normal quantile
Z95 = 1.959963984540054


def wilson_interval(k: int, n: int, z: float = Z95) -> Tuple[float, float]:
    """Wilson score interval of a binomial proportion ``k / n``.

    Unlike the normal ("Wald") interval it stays inside [0, 1] and behaves at k = 0 or k = n,
    which is where small robot evaluations usually are.

    :param k: number of successes, ``0 <= k <= n``.
    :param n: number of trials; ``n = 0`` gives the uninformative interval ``(0.0, 1.0)``.
    :param z: normal quantile (1.96 for a 95% interval).
    :return: ``(low, high)``.
    :raises ValueError: on negative counts, ``k > n`` or a non-positive ``z``.
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f'need 0 <= k <= n, got k={k}, n={n}')
    if not z > 0:
        raise ValueError(f'z must be positive, got {z}')
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, center - half)
    high = 1.0 if k == n else min(1.0, center + half)
    return low, high


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """Percentile with linear interpolation between order statistics (numpy's default).

    :param values: samples (any order).
    :param q: percentile in [0, 100].
    :return: the percentile, or ``None`` for no samples.
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError(f'percentile must be in [0, 100], got {q}')
    data = sorted(float(v) for v in values)
    if not data:
        return None
    pos = (len(data) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def latency_summary(values: Iterable[float]) -> Dict[str, Optional[float]]:
    """``{'p50', 'p99', 'mean', 'max'}`` of latencies (milliseconds); ``None`` when empty."""
    data = [float(v) for v in values]
    if not data:
        return {'p50': None, 'p99': None, 'mean': None, 'max': None}
    return {
        'p50': round(percentile(data, 50.0), 3),
        'p99': round(percentile(data, 99.0), 3),
        'mean': round(sum(data) / len(data), 3),
        'max': round(max(data), 3),
    }
