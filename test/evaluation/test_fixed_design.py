"""Fixed-N baseline (:mod:`retain_ros.evaluation.fixed_design`): Barnard's exact test."""
from __future__ import annotations

import numpy as np
import pytest

from retain_ros.evaluation.fixed_design import _binomial_pmf
from retain_ros.evaluation.fixed_design import barnard_power
from retain_ros.evaluation.fixed_design import barnard_region
from retain_ros.evaluation.fixed_design import fixed_n
from retain_ros.evaluation.fixed_design import worst_case_power


@pytest.mark.parametrize('n', [10, 25, 40])
def test_size_at_most_level_over_the_nuisance(n):
    reject = barnard_region(n, 0.05)
    assert reject.any() and (reject == reject.T).all()  # two-sided, symmetric
    assert not reject[np.arange(n + 1), np.arange(n + 1)].any()
    for rate in np.linspace(0.01, 0.99, 37):             # off the maximisation grid too
        pmf = _binomial_pmf(n, np.array([rate]))[0]
        size = float((np.outer(pmf, pmf) * reject).sum())
        assert size <= 0.05 + 2e-3


def test_power_grows_with_gap_and_n():
    assert barnard_power(30, 0.05, 0.5, 0.5)[0] < 0.05
    assert barnard_power(30, 0.05, 0.2, 0.8)[0] > 0.95
    assert barnard_power(60, 0.05, 0.35, 0.65)[0] > barnard_power(30, 0.05, 0.35, 0.65)[0]
    assert barnard_power(30, 0.05, 0.65, 0.35)[0] < 0.01   # b worse: never "b better"


def test_fixed_n_is_the_smallest():
    n = fixed_n(0.05, 0.8, 0.3)
    assert 35 <= n <= 55
    assert worst_case_power(n, 0.05, 0.3)['power'] >= 0.8
    assert worst_case_power(n - 1, 0.05, 0.3)['power'] < 0.8
    assert fixed_n(0.025, 0.8, 0.3) > n and fixed_n(0.05, 0.8, 0.4) < n


def test_fixed_n_rejects_bad_values():
    with pytest.raises(ValueError):
        fixed_n(0.05, 1.2, 0.3)
