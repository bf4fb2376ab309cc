"""An alpha schedule that stops when the data decide: sequential comparisons, Holm, dropping.

Same duck type as :class:`~retain_ros.evaluation.schedule.AlphaSchedule` (``next``, ``label``,
``remaining``, ``total``) plus :meth:`AdaptiveSchedule.record`, :meth:`~AdaptiveSchedule.abort`
and :meth:`~AdaptiveSchedule.status`. The episodes run in blocks: every still-active setting once
per block, in a seeded shuffled order (blind labels as in ``AlphaSchedule``); the outcomes of two
settings in one block are a pair of the paired test (:mod:`retain_ros.evaluation.sequential`).

Comparisons: each setting against the reference (``reference='alpha=1'``, the finetuned model by
default), or all pairs (``'best'``). After every outcome each comparison's sequential p-value is
updated and Holm's step-down procedure over all comparisons decides which are significant at the
family-wise level. A setting decided worse than another is dropped; a setting whose comparisons
are all answered stops running; a comparison that can no longer be decided within the budget is
answered "no difference within budget". The schedule stops when nothing is left to decide.

Aborted episodes are not counted: the same setting is offered again. Abort only for reasons that
have nothing to do with how the policy is doing (a person in the workspace, a camera cable),
never because an episode is going badly.
"""
from __future__ import annotations

import random
from typing import Any
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple
from typing import Union

import numpy as np

from retain_ros.evaluation.schedule import AlphaSchedule
from retain_ros.evaluation.schedule import describe
from retain_ros.evaluation.schedule import parse_setting
from retain_ros.evaluation.schedule import ScheduleError
from retain_ros.evaluation.sequential import DesignError
from retain_ros.evaluation.sequential import plan
from retain_ros.evaluation.sequential import SequentialDesign

UNDECIDED = 'undecided'
A_BETTER = 'a better'
B_BETTER = 'b better'
NO_DIFFERENCE = 'no difference within budget'


def holm(p_values: Sequence[float]) -> List[float]:
    """Return Holm-adjusted p-values (step-down; valid under any dependence).

    :param p_values: the raw p-values.
    :return: adjusted p-values in the same order (reject those ≤ the family-wise level).
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


class _Comparison:
    """State of one comparison ``a`` vs ``b`` (setting indices)."""

    def __init__(self, a: int, b: int):
        self.a, self.b = a, b
        self.pairs = self.wins_a = self.wins_b = 0
        self.log_e = 0.0
        self.log_e_max = 0.0
        self.side_at_max = 0      # +1: a was ahead at the maximum, -1: b
        self.p_raw = 1.0
        self.p_adj = 1.0
        self.decision = UNDECIDED
        self.note = ''


class AdaptiveSchedule:
    """A seeded, block-shuffled, optionally blind schedule that stops when the data decide.

    :param settings: setting strings (see :func:`~retain_ros.evaluation.schedule.parse_setting`).
    :param design: the :class:`~retain_ros.evaluation.sequential.SequentialDesign`.
    :param seed: random seed of the order (and of the blind codes, as ``AlphaSchedule``).
    :param blind: hide the settings behind opaque labels (never any alpha in :meth:`status`).
    :raises ScheduleError: bad or repeated settings.
    :raises DesignError: fewer than two settings, a reference that is not one of them.
    :raises ~retain_ros.evaluation.sequential.BudgetError: the budget cannot reach the power.
    """

    def __init__(self, settings: Sequence[Union[str, float]], design: SequentialDesign,
                 seed: int = 0, blind: bool = False):
        if not isinstance(design, SequentialDesign):
            raise DesignError(f'design must be a SequentialDesign, got {design!r}')
        self._labels = AlphaSchedule(settings, repeats=1, seed=seed, blind=blind)
        self.settings: List[Dict[str, float]] = self._labels.settings
        self.design = design
        self.seed = seed
        self.blind = bool(blind)
        count = len(self.settings)
        if count < 2:
            raise DesignError('a sequential comparison needs at least two settings, got '
                              f'{count}; add settings to the schedule')
        names = [describe(p) for p in self.settings]
        self.reference: Optional[int] = None
        if design.best:
            pairs = [(i, j) for i in range(count) for j in range(i + 1, count)]
        else:
            try:
                ref = describe(parse_setting(design.reference))
            except ScheduleError as exc:
                raise DesignError(f'reference {design.reference!r}: {exc}') from None
            if ref not in names:
                raise DesignError(f'reference {design.reference!r} is not one of the settings '
                                  f'{names}; add it to the schedule or use reference=best')
            self.reference = names.index(ref)
            pairs = [(i, self.reference) for i in range(count) if i != self.reference]
        self.plan = plan(design, len(pairs))
        self._test = self.plan.test
        self._need = self._test.pairs_needed(self.plan.log_lenient)
        self._comparisons = [_Comparison(a, b) for a, b in pairs]
        self._rng = random.Random(f'{seed}-adaptive')
        self._n = [0] * count
        self._successes = [0] * count
        self._active = set(range(count))
        self._dropped: List[int] = []
        self._block: List[int] = []
        self._block_outcomes: Dict[int, Tuple[bool, str]] = {}
        self._last: Optional[int] = None
        self._pending: Optional[int] = None
        self.episodes_done = 0
        self.aborted = 0
        self.mixed_tag_blocks = 0
        self.stopped: Optional[str] = None

    # ------------------------------------------------------------------ AlphaSchedule's face
    @property
    def total(self) -> int:
        """The budget bound for all settings: budget x settings."""
        return self.design.budget * len(self.settings)

    @property
    def remaining(self) -> int:
        """Episodes left at most (each active setting up to the budget; 0 once stopped)."""
        if self.stopped is not None:
            return 0
        return sum(self.design.budget - self._n[i] for i in self._active)

    @property
    def decided(self) -> bool:
        """True once every comparison has its final answer (the schedule has stopped)."""
        return self.stopped is not None

    def label(self, params: Dict[str, float]) -> str:
        """Return what the operator may see: ``'alpha=0.5'``, or ``'setting C'`` when blind."""
        return self._labels.label(params)

    def next(self) -> Dict[str, float]:  # noqa: A003 (the contract's name)
        """Return the node parameters of the next episode (the same until recorded or aborted).

        :raises StopIteration: when every comparison is answered or the budget is spent.
        """
        if self._pending is None:
            if self.stopped is not None:
                raise StopIteration(f'sequential evaluation finished: {self.stopped}')
            self._block = [i for i in self._block if i in self._active]
            if not self._block:
                self._new_block()
            self._pending = self._block[0]
        return dict(self.settings[self._pending])

    def __iter__(self):
        while True:
            try:
                yield self.next()
            except StopIteration:
                return

    def _new_block(self) -> None:
        self._note_block_tags()
        self._block_outcomes = {}
        block = sorted(self._active)
        self._rng.shuffle(block)
        if len(block) > 1 and block[0] == self._last:
            swap = self._rng.randrange(1, len(block))
            block[0], block[swap] = block[swap], block[0]
        self._block = block

    def _note_block_tags(self) -> None:
        tags = {tag for _, tag in self._block_outcomes.values()}
        if len(self._block_outcomes) > 1 and len(tags) > 1:
            self.mixed_tag_blocks += 1

    # ------------------------------------------------------------------ outcomes
    def record(self, success: bool, tag: str = '') -> None:
        """Count the outcome of the episode last given by :meth:`next` and update the tests.

        :param success: the outcome.
        :param tag: the episode's scene tag; the settings of one block should share one.
        :raises ScheduleError: when no episode was handed out.
        """
        if self._pending is None:
            raise ScheduleError('no episode to record: call next() first')
        idx, self._pending = self._pending, None
        self._block.remove(idx)
        self._last = idx
        outcome = bool(success)
        self._block_outcomes[idx] = (outcome, str(tag or ''))
        self._n[idx] += 1
        self._successes[idx] += int(outcome)
        self.episodes_done += 1
        for comp in self._comparisons:
            if idx in (comp.a, comp.b) and comp.a in self._block_outcomes \
                    and comp.b in self._block_outcomes and comp.decision == UNDECIDED \
                    and not comp.note:
                self._add_pair(comp)
        self._decide()
        if not any(i in self._active for i in self._block):   # the block is complete
            self._note_block_tags()
            self._block_outcomes = {}

    def abort(self) -> None:
        """Do not count the episode last given by :meth:`next`; it is offered again.

        :raises ScheduleError: when no episode was handed out.
        """
        if self._pending is None:
            raise ScheduleError('no episode to abort: call next() first')
        self._pending = None
        self.aborted += 1

    def _add_pair(self, comp: _Comparison) -> None:
        x_a = self._block_outcomes[comp.a][0]
        x_b = self._block_outcomes[comp.b][0]
        comp.pairs += 1
        comp.wins_a += int(x_a and not x_b)
        comp.wins_b += int(x_b and not x_a)
        comp.log_e = float(self._test.log_e[comp.wins_a, comp.wins_b])
        if comp.log_e > comp.log_e_max:
            comp.log_e_max = comp.log_e
            comp.side_at_max = 1 if comp.wins_a > comp.wins_b else -1
            comp.p_raw = self._test.p_value(comp.log_e_max)

    def _decide(self) -> None:
        """Holm over all comparisons; drop losers; answer futile comparisons; maybe stop."""
        adjusted = holm([c.p_raw for c in self._comparisons])
        for comp, p_adj in zip(self._comparisons, adjusted):
            comp.p_adj = p_adj
            if comp.decision == UNDECIDED and p_adj <= self.design.level:
                comp.decision = A_BETTER if comp.side_at_max > 0 else B_BETTER
                comp.note = ''
                loser = comp.b if comp.side_at_max > 0 else comp.a
                if self.reference is not None and loser == self.reference:
                    loser = comp.a   # the reference keeps running for the other comparisons
                    self._active.discard(loser)
                elif loser in self._active:
                    self._active.discard(loser)
                    self._dropped.append(loser)
        budget = self.design.budget
        for comp in self._comparisons:
            if comp.decision != UNDECIDED or comp.note:
                continue
            if comp.a not in self._active or comp.b not in self._active:
                comp.note = 'setting dropped'
            elif comp.pairs >= budget or \
                    self._need[comp.wins_a, comp.wins_b] > budget - comp.pairs:
                # at the budget even a state past the lenient threshold (not significant
                # after Holm) is final: no more pairs may run
                comp.decision = NO_DIFFERENCE
        live = [c for c in self._comparisons if self._live(c)]
        self._active = {i for i in self._active if any(i in (c.a, c.b) for c in live)}
        if not live:
            self.stopped = 'budget' if any(c.decision == NO_DIFFERENCE
                                           for c in self._comparisons) else 'decided'
            self._note_block_tags()
            self._block_outcomes = {}
            self._block = []

    def _live(self, comp: _Comparison) -> bool:
        return (comp.decision == UNDECIDED and not comp.note and comp.a in self._active
                and comp.b in self._active)

    # ------------------------------------------------------------------ status
    def _name(self, idx: int) -> str:
        return self.label(self.settings[idx])

    def expected_remaining(self) -> int:
        """Estimate the episodes still to run (plug-in rates; each setting until its last test).

        Each open comparison's expected further pairs come from the exact dynamic programme at
        the shrunk observed rates ``(k + 1) / (n + 2)``; a setting runs as long as its longest.
        """
        if self.stopped is not None:
            return 0
        open_comps = [c for c in self._comparisons if c.decision == UNDECIDED and not c.note]
        level = self.design.level / max(1, sum(c.decision == UNDECIDED for c in
                                               self._comparisons))
        threshold = self._test.threshold(level)
        per_setting = {i: 0.0 for i in self._active}
        for comp in open_comps:
            if not self._live(comp):
                continue
            rate = [(self._successes[i] + 1) / (self._n[i] + 2) for i in (comp.a, comp.b)]
            res = self._test.run(threshold, rate[0], rate[1], futility=self.plan.log_lenient,
                                 start=(comp.pairs, comp.wins_a, comp.wins_b))
            for i in (comp.a, comp.b):
                per_setting[i] = max(per_setting.get(i, 0.0), float(res['pairs'][0]))
        return int(np.ceil(sum(per_setting.values())))

    def status(self) -> Dict[str, Any]:
        """Return the sequential test's state, JSON-able; labels only (never alpha) when blind."""
        design = self.design
        reference = 'best' if self.reference is None else self._name(self.reference)
        comparisons = []
        for comp in self._comparisons:
            entry = {'a': self._name(comp.a), 'b': self._name(comp.b), 'pairs': comp.pairs,
                     'e_value': float(np.exp(comp.log_e)), 'p_value': comp.p_adj,
                     'p_raw': comp.p_raw, 'decision': comp.decision}
            if comp.note:
                entry['note'] = comp.note
            if not self.blind:
                entry['wins_a'], entry['wins_b'] = comp.wins_a, comp.wins_b
            comparisons.append(entry)
        left = [self._name(i) for i in sorted(self._active)] if self.stopped is None else []
        expected = self.expected_remaining()
        status = {
            'design': {'level': design.level, 'power': design.power, 'gap': design.gap,
                       'budget': design.budget, 'reference': reference,
                       'comparisons': len(self._comparisons), 'correction': 'holm',
                       'theta': self.plan.theta, 'design_power': round(self.plan.power, 4)},
            'episodes_done': self.episodes_done,
            'aborted': self.aborted,
            'settings_left': left,
            'dropped': [self._name(i) for i in self._dropped],
            'decided': self.decided,
            'stopped': self.stopped,
            'comparisons': comparisons,
            'expected_remaining': expected,
            'mixed_tag_blocks': self.mixed_tag_blocks,
            'summary': self._summary(left, expected),
        }
        return status

    def _summary(self, left: List[str], expected: int) -> str:
        if self.stopped is None:
            return (f'{len(left)} setting{"s" if len(left) != 1 else ""} left, '
                    f'~{expected} more episodes expected')
        found = [f'{self._name(c.a)} better than {self._name(c.b)}' if c.decision == A_BETTER
                 else f'{self._name(c.b)} better than {self._name(c.a)}'
                 for c in self._comparisons if c.decision in (A_BETTER, B_BETTER)]
        head = ('decided' if self.stopped == 'decided' else 'budget spent') + \
            f' after {self.episodes_done} episodes'
        return head + ': ' + ('; '.join(found) if found else
                              'no difference within budget')
