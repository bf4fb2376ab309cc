"""Sequential comparison of two success rates on paired episodes, with exact error control.

Two settings ``a`` and ``b`` run once per block (same scene); a block gives the pair
``(x_a, x_b)`` of outcomes. Only discordant pairs carry information: with ``W_a`` pairs that
``a`` won and ``W_b`` that ``b`` won, the evidence is the e-value of a one-point mixture::

    E = ((2θ)^W_a (2(1−θ))^W_b + (2(1−θ))^W_a (2θ)^W_b) / 2        θ ∈ (1/2, 1)

Under H0 (p_a = p_b; the common rate may even change from block to block) each discordant pair
is a fair coin, so ``E`` is a nonnegative martingale (Ville: P(sup E ≥ 1/x) ≤ x at any stopping
time). With the budget ``N`` pairs known, the test is calibrated EXACTLY instead: the worst case
under H0 is that every pair is discordant (more fair coin flips, more chances), so

    p = P(a fair walk of N steps ever reaches E ≥ e_max)

where ``e_max`` is the largest ``E`` seen so far is a p-value valid at any stopping time within
the budget (a finite-horizon sequential test in the spirit of STEP, Snyder et al., RSS 2025,
arXiv 2503.10966), always ≤ 1/e_max. It decides ``b better`` (``a better``) when ``p`` is small
enough and ``W_b > W_a`` (``W_a > W_b``) at the maximum; claiming the wrong direction is at most
as likely as a false positive. ``θ`` is chosen for the design (:func:`plan`): the worst case over
the base rate of the power at the design gap, computed exactly by dynamic programming.
"""
from __future__ import annotations

from dataclasses import dataclass
import functools
import math
from typing import Dict
from typing import Optional
from typing import Tuple

import numpy as np

from retain_ros.evaluation.schedule import ScheduleError

#: largest budget (episodes per setting) a design accepts
MAX_BUDGET = 400
#: candidate mixture parameters tried by :func:`plan`
THETAS = tuple(round(t, 3) for t in np.arange(0.55, 0.951, 0.05))
#: base rates p_a (p_b = p_a + gap) over which the power is taken at its worst
_BASE_POINTS = 13
_TOL = 1e-9


class DesignError(ScheduleError):
    """A sequential design that cannot be used (a ``ValueError``)."""


class BudgetError(DesignError):
    """The budget cannot reach the target power at the design gap.

    :param message: the explanation.
    :param needed: the smallest budget (episodes per setting) that reaches it, or None when
        even :data:`MAX_BUDGET` does not.
    """

    def __init__(self, message: str, needed: Optional[int]):
        super().__init__(message)
        self.needed = needed


@dataclass(frozen=True)
class SequentialDesign:
    """What a sequential comparison must guarantee.

    :param level: family-wise false-positive rate over all comparisons.
    :param power: target power at the design gap (worst case over the base rate).
    :param gap: design gap in success rate (``p_b - p_a``).
    :param budget: ``N_max``, episodes per setting at most (64 reaches power 0.8 at gap 0.3 for
        up to 3 settings; 2 settings need 46).
    :param reference: a setting every other one is compared with (parsed with
        :meth:`~retain_ros.merging.spec.MergeSpec.parse`) or ``'best'`` (all pairs).
    :raises DesignError: a value out of range.
    """

    level: float = 0.05
    power: float = 0.8
    gap: float = 0.3
    budget: int = 64
    reference: str = 'alpha=1'

    def __post_init__(self):
        for name, value, low, high in (('level', self.level, 0.0, 0.5),
                                       ('power', self.power, 0.0, 1.0),
                                       ('gap', self.gap, 0.0, 1.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    low < value < high or (name == 'gap' and value == 1.0)):
                raise DesignError(f'{name} {value!r} is outside ({low:g}, {high:g}); give a '
                                  'value inside it')
        if isinstance(self.budget, bool) or not isinstance(self.budget, int) or not (
                2 <= self.budget <= MAX_BUDGET):
            raise DesignError(f'budget {self.budget!r} must be an integer from 2 to '
                              f'{MAX_BUDGET} episodes per setting')
        if not isinstance(self.reference, str) or not self.reference.strip():
            raise DesignError(f"reference {self.reference!r} must be a setting or 'best'")

    @property
    def best(self) -> bool:
        """True in 'find the best' mode (all pairs compared)."""
        return self.reference.strip().lower() == 'best'


class PairTest:
    """The exact finite-horizon test of one comparison: e-values, p-values, thresholds.

    Immutable after construction (shared between schedules; ``deepcopy`` returns it).

    :param theta: mixture parameter in (1/2, 1).
    :param budget: the horizon ``N`` (pairs at most).
    """

    def __init__(self, theta: float, budget: int):
        self.theta = float(theta)
        self.budget = int(budget)
        n = self.budget
        wa, wb = np.meshgrid(np.arange(2 * n + 2), np.arange(2 * n + 2), indexing='ij')
        up, down = math.log(2 * self.theta), math.log(2 * (1 - self.theta))
        #: log E on the lattice (W_a, W_b), both up to 2N + 1 (futility looks ahead)
        self.log_e = np.logaddexp(wa * up + wb * down, wa * down + wb * up) - math.log(2)
        self._p_cache: Dict[float, float] = {}

    def __deepcopy__(self, memo):
        return self

    def hit_probability(self, log_threshold: float) -> float:
        """Return the p-value of a running maximum: P_H0(log E ≥ ``log_threshold`` within N pairs).

        The worst case under H0 is a common success rate of 1/2: a pair is discordant with
        probability 2p(1 − p) ≤ 1/2 (and fewer discordant pairs give fewer chances to cross), its
        winner is a fair coin whatever p is, even when p changes from block to block.
        """
        key = round(float(log_threshold), 9)
        if key not in self._p_cache:
            res = self.run(key, 0.5, 0.5)
            self._p_cache[key] = min(1.0, float(res['a_better'][0] + res['b_better'][0]))
        return self._p_cache[key]

    def p_value(self, log_e_max: float) -> float:
        """Return the sequential p-value of a running maximum ``log E`` (1 below E = 1)."""
        return 1.0 if log_e_max <= _TOL else self.hit_probability(log_e_max)

    def threshold(self, level: float) -> float:
        """Return the smallest lattice ``log E`` whose p-value is ≤ ``level`` (inf if none)."""
        n = self.budget
        wa, wb = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing='ij')
        values = np.unique(np.round(self.log_e[:n + 1, :n + 1][wa + wb <= n], 9))
        values = values[values > _TOL]
        lo, hi = 0, len(values)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.hit_probability(values[mid]) <= level:
                hi = mid
            else:
                lo = mid + 1
        return float(values[lo]) if lo < len(values) else math.inf

    def pairs_needed(self, log_threshold: float) -> np.ndarray:
        """Return, per state (W_a, W_b) ≤ N, the fewest further pairs that can reach the threshold.

        A comparison whose remaining pairs are fewer is futile: it can no longer be decided.
        """
        n = self.budget
        need = np.full((n + 1, n + 1), n + 1, dtype=np.int64)
        for i in range(n, -1, -1):
            reach = ((self.log_e[i:i + n + 1, :n + 1] >= log_threshold - _TOL)
                     | (self.log_e[:n + 1, i:i + n + 1] >= log_threshold - _TOL))
            need[reach] = i
        return need

    def run(self, log_threshold: float, p_a, p_b, futility: Optional[float] = None,
            start: Tuple[int, int, int] = (0, 0, 0)) -> Dict[str, np.ndarray]:
        """Compute the exact operating characteristics for base rates (vectorised over cases).

        :param log_threshold: decide when ``log E`` reaches it.
        :param p_a: success rate(s) of ``a`` (array-like).
        :param p_b: success rate(s) of ``b``.
        :param futility: stop early when even the threshold ``futility`` (log E, the most
            lenient one) can no longer be reached; None = never.
        :param start: ``(pairs, W_a, W_b)`` already observed.
        :return: ``{'a_better', 'b_better', 'pairs'}``: decision probabilities and the expected
            number of further pairs.
        """
        p_a, p_b = np.broadcast_arrays(np.atleast_1d(np.asarray(p_a, float)),
                                       np.atleast_1d(np.asarray(p_b, float)))
        n = self.budget
        done, wa0, wb0 = start
        win_a = (p_a * (1 - p_b))[:, None, None]
        win_b = (p_b * (1 - p_a))[:, None, None]
        tie = 1 - win_a - win_b
        grid = self.log_e[:n + 1, :n + 1]
        stop = grid >= log_threshold - _TOL
        side_a = np.triu(np.ones((n + 1, n + 1), bool), 1).T   # W_a > W_b
        need = self.pairs_needed(futility) if futility is not None else None
        dist = np.zeros((len(p_a), n + 1, n + 1))
        dist[:, wa0, wb0] = 1.0
        out = {'a_better': np.zeros(len(p_a)), 'b_better': np.zeros(len(p_a)),
               'pairs': np.zeros(len(p_a))}
        for k in range(done, n + 1):
            out['a_better'] += (dist * (stop & side_a)).sum(axis=(1, 2))
            out['b_better'] += (dist * (stop & ~side_a)).sum(axis=(1, 2))
            dist[:, stop] = 0.0
            if need is not None:
                dist[:, need > n - k] = 0.0
            if k == n:
                break
            out['pairs'] += dist.sum(axis=(1, 2))
            new = dist * tie
            new[:, 1:, :] += dist[:, :-1, :] * win_a
            new[:, :, 1:] += dist[:, :, :-1] * win_b
            dist = new
        return out


@functools.lru_cache(maxsize=64)
def pair_test(theta: float, budget: int) -> PairTest:
    """Return the (cached, shared) :class:`PairTest` of ``theta`` and ``budget``."""
    return PairTest(theta, budget)


@dataclass(frozen=True)
class Plan:
    """A design made concrete for a number of comparisons (see :func:`plan`).

    :param design: the design.
    :param comparisons: the number of comparisons (Holm's first step uses level / comparisons).
    :param theta: the chosen mixture parameter.
    :param log_threshold: log E that decides at level / comparisons.
    :param log_lenient: log E that decides at the full level (Holm's last step; futility).
    :param power: worst-case power at the design gap (exact), at level / comparisons.
    :param expected_pairs: expected pairs (per setting) at the worst-case base rate.
    :param worst_base: the base rate ``p_a`` of that worst case (``p_b = p_a + gap``).
    """

    design: SequentialDesign
    comparisons: int
    theta: float
    log_threshold: float
    log_lenient: float
    power: float
    expected_pairs: float
    worst_base: float

    @property
    def test(self) -> PairTest:
        """The shared :class:`PairTest`."""
        return pair_test(self.theta, self.design.budget)


def _bases(gap: float) -> np.ndarray:
    return np.linspace(0.0, 1.0 - gap, _BASE_POINTS) if gap < 1 else np.zeros(1)


def _evaluate(theta: float, budget: int, level: float, full_level: float, gap: float):
    test = pair_test(theta, budget)
    thr, lenient = test.threshold(level), test.threshold(full_level)
    bases = _bases(gap)
    res = test.run(thr, bases, bases + gap, futility=lenient)
    worst = int(np.argmin(res['b_better']))
    return float(res['b_better'][worst]), float(res['pairs'][worst]), float(bases[worst]), \
        thr, lenient


@functools.lru_cache(maxsize=64)
def plan(design: SequentialDesign, comparisons: int = 1) -> Plan:
    """Choose the mixture parameter for ``design`` and check that its budget reaches the power.

    Among :data:`THETAS` whose worst-case power (over base rates ``p_a`` in [0, 1 − gap],
    ``p_b = p_a + gap``) reaches ``design.power`` at level ``level / comparisons``, the one with
    the fewest expected pairs at its worst-case base rate.

    :param design: the design.
    :param comparisons: how many comparisons share the family-wise level.
    :return: the :class:`Plan`.
    :raises BudgetError: no parameter reaches the power within the budget; the message names
        the budget that would.
    """
    level = design.level / max(1, int(comparisons))
    results = {t: _evaluate(t, design.budget, level, design.level, design.gap) for t in THETAS}
    good = [t for t in THETAS if results[t][0] >= design.power]
    if not good:
        best = max(THETAS, key=lambda t: results[t][0])
        needed = _budget_needed(design, best, level)
        need_text = (f'a budget of {needed} episodes per setting reaches it'
                     if needed else f'even {MAX_BUDGET} episodes per setting do not reach it')
        raise BudgetError(
            f'budget {design.budget} episodes per setting gives at most '
            f'{100 * results[best][0]:.0f}% power (worst case over the base rate) to detect a '
            f'gap of {design.gap:g} at level {level:.3g} ({comparisons} comparison(s)); '
            f'{need_text}: raise the budget, or design for a larger gap or a lower power',
            needed)
    theta = min(good, key=lambda t: results[t][1])
    power, pairs, base, thr, lenient = results[theta]
    return Plan(design, int(comparisons), theta, thr, lenient, power, pairs, base)


def _budget_needed(design: SequentialDesign, theta: float, level: float) -> Optional[int]:
    """Return the smallest budget reaching the power with ``theta`` (bisection), or None."""
    def power(budget):
        return _evaluate(theta, budget, level, design.level, design.gap)[0]
    lo, hi = design.budget, design.budget
    while power(hi) < design.power:
        if hi >= MAX_BUDGET:
            return None
        lo, hi = hi, min(MAX_BUDGET, hi * 2)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if power(mid) >= design.power else (mid, hi)
    return hi


def simulate(design: SequentialDesign, p_a: float, p_b: float, n_sequences: int = 10000,
             seed: int = 0, comparisons: int = 1) -> Dict[str, float]:
    """Run the sequential test of one comparison on simulated Bernoulli pairs (vectorised).

    :param design: the design (its budget is the horizon).
    :param p_a: true success rate of setting ``a``.
    :param p_b: true success rate of setting ``b``.
    :param n_sequences: independent sequences of up to ``budget`` pairs.
    :param seed: random seed.
    :param comparisons: the test runs at ``level / comparisons`` (Holm's first step).
    :return: ``{'rejection_rate'`` (any decision), ``'false_positive_rate'`` (a decision when
        ``p_a == p_b``, else 0), ``'power'`` (the right direction when they differ),
        ``'wrong_direction'``, ``'mean_episodes'``, ``'p50_episodes'``, ``'p90_episodes'``,
        ``'max_episodes'``}; episodes count both settings.
    """
    chosen = plan(design, comparisons)
    test = chosen.test
    n = design.budget
    rng = np.random.default_rng(seed)
    x_a = rng.random((n_sequences, n)) < p_a
    x_b = rng.random((n_sequences, n)) < p_b
    wins_a = np.cumsum(x_a & ~x_b, axis=1)
    wins_b = np.cumsum(x_b & ~x_a, axis=1)
    crossed = test.log_e[wins_a, wins_b] >= chosen.log_threshold - _TOL
    remaining = n - np.arange(1, n + 1)
    futile = test.pairs_needed(chosen.log_lenient)[wins_a, wins_b] > remaining
    any_cross = crossed.any(axis=1)
    first_cross = np.where(any_cross, crossed.argmax(axis=1), n)
    first_futile = np.where(futile.any(axis=1), futile.argmax(axis=1), n - 1)
    decided = any_cross & (first_cross <= first_futile)
    stop = np.where(decided, first_cross, first_futile) + 1
    rows = np.arange(n_sequences)
    at = np.minimum(first_cross, n - 1)
    a_ahead = wins_a[rows, at] > wins_b[rows, at]
    says_a = decided & a_ahead
    says_b = decided & ~a_ahead
    right = says_b if p_b > p_a else says_a
    episodes = 2 * stop
    return {
        'rejection_rate': float(decided.mean()),
        'false_positive_rate': float(decided.mean()) if p_a == p_b else 0.0,
        'power': float(right.mean()) if p_a != p_b else 0.0,
        'wrong_direction': float((decided & ~right).mean()) if p_a != p_b else 0.0,
        'mean_episodes': float(episodes.mean()),
        'p50_episodes': float(np.percentile(episodes, 50)),
        'p90_episodes': float(np.percentile(episodes, 90)),
        'max_episodes': float(episodes.max()),
    }
