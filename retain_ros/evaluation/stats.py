"""Small statistics: binomial confidence intervals, percentiles and latency summaries.

Pure Python (no numpy needed), so the episode log and the report stay cheap to import. The one
:func:`percentile` of the package: the node's diagnostics use it too.
"""
from __future__ import annotations

import logging
import math
from typing import Dict
from typing import Iterable
from typing import Optional
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


def percentile(values: Iterable[float], q: float) -> Optional[float]:
    """Return the ``q``-th percentile, interpolated linearly between order statistics.

    The interpolation is numpy's default (``np.percentile(values, q)``).

    Empty rule: no samples give ``None`` (not NaN, not an error), so a caller must decide what an
    empty window shows: the episode log writes ``null``, the node's diagnostics write ``nan``.

    :param values: samples (any order, any iterable of numbers).
    :param q: percentile in [0, 100].
    :return: the percentile, or ``None`` for no samples.
    :raises ValueError: when ``q`` is outside [0, 100].
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
    """Summarize latencies (milliseconds) as ``{'p50', 'p99', 'mean', 'max'}``.

    :param values: latencies in milliseconds.
    :return: the four values rounded to 3 decimals; all ``None`` when there are none.
    """
    data = [float(v) for v in values]
    if not data:
        return {'p50': None, 'p99': None, 'mean': None, 'max': None}
    return {
        'p50': round(percentile(data, 50.0), 3),
        'p99': round(percentile(data, 99.0), 3),
        'mean': round(sum(data) / len(data), 3),
        'max': round(max(data), 3),
    }
