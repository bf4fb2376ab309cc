"""The fixed-N baseline: Barnard's exact unconditional test and the N it needs.

Two settings run ``n`` episodes each; Barnard's test compares ``x_a / n`` with ``x_b / n`` by
the pooled score statistic ``Z = (p̂_b − p̂_a) / sqrt(p̄ (1 − p̄) 2 / n)`` and its p-value is
maximised over the common success rate (the nuisance parameter), here over a grid of
:data:`NUISANCE_POINTS` rates. The design with the same guarantees as a sequential one is the
smallest ``n`` whose two-sided level-``level`` test reaches the power at the design gap in the
worst case over the base rate (:func:`fixed_n`), the figure the sequential test's expected
episodes are compared with in ``benchmarks/sequential_study.py``.
"""
from __future__ import annotations

import functools
import math
from typing import Dict

import numpy as np

#: rates over which the p-value is maximised (denser near 0 and 1 than a plain linspace)
NUISANCE_POINTS = 201
#: base rates p_a (p_b = p_a + gap) over which the power is taken at its worst
BASE_POINTS = 13
#: largest n :func:`fixed_n` searches
MAX_N = 400


def _binomial_pmf(n: int, rates: np.ndarray) -> np.ndarray:
    """Return ``pmf[r, x]`` = P(Binomial(n, rates[r]) = x) for x = 0..n."""
    x = np.arange(n + 1)
    log_choose = np.array([math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                           for k in x])
    rates = np.clip(np.asarray(rates, float), 0.0, 1.0)[:, None]
    with np.errstate(divide='ignore', invalid='ignore'):
        log_p = log_choose + x * np.log(rates) + (n - x) * np.log1p(-rates)
    pmf = np.exp(log_p)
    pmf[np.isnan(pmf)] = 0.0
    pmf[(rates[:, 0] == 0.0), 0] = 1.0
    pmf[(rates[:, 0] == 1.0), n] = 1.0
    return pmf


@functools.lru_cache(maxsize=256)
def barnard_region(n: int, level: float) -> np.ndarray:
    """Return the rejection region of Barnard's two-sided test with ``n`` per setting.

    :param n: episodes per setting.
    :param level: the test's level.
    :return: boolean ``reject[x_a, x_b]``.
    """
    x = np.arange(n + 1)
    xa, xb = np.meshgrid(x, x, indexing='ij')
    pooled = (xa + xb) / (2 * n)
    with np.errstate(divide='ignore', invalid='ignore'):
        z = np.abs(xb - xa) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
    z = np.round(np.nan_to_num(z, nan=0.0), 9).ravel()
    order = np.argsort(-z, kind='stable')
    z_sorted = z[order]
    # the last index of each group of equal |Z| (ties share one p-value)
    last = np.searchsorted(-z_sorted, -z_sorted, side='right') - 1
    u = np.linspace(0.0, 1.0, NUISANCE_POINTS)
    rates = 0.5 - 0.5 * np.cos(np.pi * u)      # dense near 0 and 1
    pmf = _binomial_pmf(n, rates)
    p_max = np.zeros(len(z))
    for row in pmf:
        table = np.outer(row, row).ravel()[order]
        tail = np.cumsum(table)[last]
        np.maximum(p_max, tail, out=p_max)
    p_values = np.empty(len(z))
    p_values[order] = p_max
    return (p_values <= level + 1e-12).reshape(n + 1, n + 1)


def barnard_power(n: int, level: float, p_a, p_b) -> np.ndarray:
    """Return the probability that Barnard's test finds ``b`` better (vectorised over rates).

    :param n: episodes per setting.
    :param level: two-sided level.
    :param p_a: success rate(s) of ``a``.
    :param p_b: success rate(s) of ``b``.
    """
    p_a, p_b = np.broadcast_arrays(np.atleast_1d(np.asarray(p_a, float)),
                                   np.atleast_1d(np.asarray(p_b, float)))
    reject = barnard_region(n, level)
    x = np.arange(n + 1)
    right = reject & (x[None, :] > x[:, None])
    pmf_a, pmf_b = _binomial_pmf(n, p_a), _binomial_pmf(n, p_b)
    return np.einsum('ri,ij,rj->r', pmf_a, right.astype(float), pmf_b)


def worst_case_power(n: int, level: float, gap: float) -> Dict[str, float]:
    """Return Barnard's power at ``gap``, worst case over the base rate ``p_a`` in [0, 1 − gap].

    :return: ``{'power', 'base'}`` (the worst base rate).
    """
    bases = np.linspace(0.0, 1.0 - gap, BASE_POINTS) if gap < 1 else np.zeros(1)
    power = barnard_power(n, level, bases, bases + gap)
    worst = int(np.argmin(power))
    return {'power': float(power[worst]), 'base': float(bases[worst])}


def fixed_n(level: float, power: float, gap: float) -> int:
    """Return the smallest n per setting for which Barnard's test reaches ``power`` at ``gap``.

    :param level: two-sided level (per comparison).
    :param power: target power, worst case over the base rate.
    :param gap: design gap in success rate.
    :raises ValueError: a value out of range, or more than :data:`MAX_N` needed.
    """
    if not (0 < level < 1 and 0 < power < 1 and 0 < gap <= 1):
        raise ValueError(f'level {level!r}, power {power!r} and gap {gap!r} must lie in (0, 1)')
    z = _normal_quantile(1 - level / 2) + _normal_quantile(power)
    start = max(2, int(0.75 * z * z * 0.5 / gap ** 2))     # normal approximation, worst p=1/2
    for n in range(start, MAX_N + 1):
        if worst_case_power(n, level, gap)['power'] >= power:
            return n
    raise ValueError(f'more than {MAX_N} episodes per setting are needed for a gap of {gap:g}')


def _normal_quantile(q: float) -> float:
    """Return the standard normal quantile (bisection on erf; no scipy)."""
    lo, hi = -10.0, 10.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
