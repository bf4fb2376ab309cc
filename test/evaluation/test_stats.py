"""Wilson interval, percentile and latency summary (:mod:`retain_ros.evaluation.stats`)."""
from __future__ import annotations

import math

import pytest

from retain_ros.evaluation.stats import latency_summary
from retain_ros.evaluation.stats import percentile
from retain_ros.evaluation.stats import wilson_interval


def _wilson_closed_form(k, n, z):
    """Independent form: roots of (p_hat - p)^2 = z^2 p (1 - p) / n, solved as a quadratic in p."""
    p_hat = k / n
    a = 1 + z * z / n
    b = -(2 * p_hat + z * z / n)
    c = p_hat * p_hat
    disc = math.sqrt(max(b * b - 4 * a * c, 0.0))
    return (-b - disc) / (2 * a), (-b + disc) / (2 * a)


@pytest.mark.parametrize('k,n,expected', [
    (8, 10, (0.490, 0.943)),
    (0, 10, (0.000, 0.278)),
    (10, 10, (0.722, 1.000)),
    (5, 10, (0.237, 0.763)),
    (1, 20, (0.009, 0.236)),
])
def test_wilson_known_values(k, n, expected):
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(expected[0], abs=6e-4)
    assert high == pytest.approx(expected[1], abs=6e-4)


def test_wilson_matches_quadratic_roots():
    for n in (1, 2, 7, 30, 101):
        for k in range(n + 1):
            for z in (1.0, 1.959964, 2.576):
                got = wilson_interval(k, n, z)
                want = _wilson_closed_form(k, n, z)
                assert got == pytest.approx(want, abs=1e-9)
                assert 0.0 <= got[0] <= k / n <= got[1] <= 1.0


def test_wilson_edge_cases():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        wilson_interval(-1, 2)
    with pytest.raises(ValueError):
        wilson_interval(1, 2, z=0)
    narrow = wilson_interval(50, 100, z=1.0)
    wide = wilson_interval(50, 100)
    assert wide[0] < narrow[0] and wide[1] > narrow[1]


def test_percentile_and_latency():
    assert percentile([], 50) is None
    assert percentile([3, 1, 2], 50) == 2
    assert percentile([0, 10], 99) == pytest.approx(9.9)
    summary = latency_summary([10, 20, 30, 40])
    assert summary['p50'] == 25 and summary['mean'] == 25 and summary['max'] == 40
    assert latency_summary([])['p50'] is None
