"""Sequential paired test (:mod:`retain_ros.evaluation.sequential`): design, exactness, validity.

The validity study runs at reduced size (2 000 seeded sequences per case); the full study
(10 000) is ``benchmarks/sequential_study.py``. Monte-Carlo margin: 3 binomial standard
deviations of the estimated rate, sqrt(r (1 - r) / 2000) <= 0.011 for r <= 0.2.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from retain_ros.evaluation.sequential import BudgetError
from retain_ros.evaluation.sequential import DesignError
from retain_ros.evaluation.sequential import plan
from retain_ros.evaluation.sequential import SequentialDesign
from retain_ros.evaluation.sequential import simulate

SEQUENCES = 2000
DESIGN = SequentialDesign(level=0.05, power=0.8, gap=0.3, budget=50)


def margin(rate: float, n: int = SEQUENCES) -> float:
    """Return 3 binomial standard deviations of a rate estimated from ``n`` sequences."""
    return 3 * math.sqrt(rate * (1 - rate) / n)


@pytest.mark.parametrize('kwargs', [{'level': 0}, {'level': 0.6}, {'power': 1.0},
                                    {'gap': 0.0}, {'gap': 1.5}, {'budget': 1},
                                    {'budget': 10 ** 6}, {'budget': 40.0}, {'reference': ' '},
                                    {'level': True}])
def test_design_rejects_bad_values(kwargs):
    with pytest.raises(DesignError):
        SequentialDesign(**kwargs)


def test_budget_too_small_names_the_budget_needed():
    with pytest.raises(BudgetError) as info:
        plan(SequentialDesign(budget=30))
    assert isinstance(info.value, ValueError)
    assert 30 < info.value.needed <= 60
    assert f'a budget of {info.value.needed} episodes per setting' in str(info.value)
    # the named budget works, one less does not
    assert plan(SequentialDesign(budget=info.value.needed)).power >= 0.8
    with pytest.raises(BudgetError):
        plan(SequentialDesign(budget=info.value.needed - 1))


def test_plan_power_and_holm_level():
    one = plan(DESIGN)
    assert one.power >= 0.8 and 0.55 <= one.theta <= 0.95
    assert one.log_threshold == one.log_lenient
    assert one.expected_pairs < DESIGN.budget
    # two comparisons: the first Holm step needs more evidence
    two = plan(SequentialDesign(budget=70), comparisons=2)
    assert two.log_threshold > two.log_lenient


def test_p_value_exact_and_below_ville():
    test = plan(DESIGN).test
    assert copy.deepcopy(test) is test
    for log_e in (0.5, 1.0, 2.0, 3.0, 4.0):
        p = test.p_value(log_e)
        assert 0 < p <= math.exp(-log_e) + 1e-12      # Ville: P(sup E >= e) <= 1/e
    assert test.p_value(0.0) == 1.0
    # the threshold is the smallest lattice value with p <= level
    thr = test.threshold(0.05)
    assert test.p_value(thr) <= 0.05
    wins_a, wins_b = np.meshgrid(np.arange(51), np.arange(51), indexing='ij')
    values = np.unique(np.round(test.log_e[:51, :51][wins_a + wins_b <= 50], 9))
    below = values[(values < thr) & (values > 0)]
    assert test.p_value(below.max()) > 0.05
    # exact size under the worst-case null (p = 1/2), by the dynamic programme
    res = test.run(thr, 0.5, 0.5)
    assert float(res['a_better'][0] + res['b_better'][0]) == pytest.approx(
        test.p_value(thr))


def test_simulation_agrees_with_exact_power():
    chosen = plan(DESIGN)
    base = chosen.worst_base
    sim = simulate(DESIGN, base, base + DESIGN.gap, SEQUENCES, seed=1)
    assert abs(sim['power'] - chosen.power) <= margin(chosen.power)
    assert sim['mean_episodes'] == pytest.approx(2 * chosen.expected_pairs, rel=0.05)


@pytest.mark.parametrize('rate', [0.05, 0.2, 0.5, 0.8, 0.95])
def test_false_positive_rate_under_the_null(rate):
    sim = simulate(DESIGN, rate, rate, SEQUENCES, seed=int(rate * 100))
    assert sim['false_positive_rate'] <= DESIGN.level + margin(DESIGN.level)
    assert sim['max_episodes'] <= 2 * DESIGN.budget


@pytest.mark.parametrize('base', [0.0, 0.35, 0.6])
def test_power_at_the_design_gap(base):
    sim = simulate(DESIGN, base, base + DESIGN.gap, SEQUENCES, seed=7)
    assert sim['power'] >= DESIGN.power - margin(DESIGN.power)
    assert sim['wrong_direction'] <= 0.005
    # and in the other direction
    flipped = simulate(DESIGN, base + DESIGN.gap, base, SEQUENCES, seed=8)
    assert flipped['power'] >= DESIGN.power - margin(DESIGN.power)


def test_large_gap_stops_early():
    sim = simulate(DESIGN, 0.1, 0.9, SEQUENCES, seed=3)
    assert sim['power'] > 0.99
    assert sim['mean_episodes'] < 0.5 * 2 * DESIGN.budget
