"""Which α setting the next evaluation episode runs: the node's side of the schedules.

:class:`EpisodeSchedule` wraps either today's fixed schedule
(:class:`~retain_ros.evaluation.schedule.AlphaSchedule`, ``schedule_repeats`` episodes per
setting) or, with parameter ``sequential``, the adaptive one
(:class:`~retain_ros.evaluation.adaptive_schedule.AdaptiveSchedule`: a sequential test per
comparison; settings decided worse are dropped; it stops once decided or at the budget).

The next setting is drawn ahead (right after the previous episode's outcome), so the operator's
console can show its label before ``~/start_episode``, and the schedule knows it is finished as
soon as the deciding episode ends. An aborted episode is not counted and its setting is offered
again. No rclpy here: the episode services (:mod:`.episodes`) drive it.
"""
from __future__ import annotations

import copy
from typing import Any
from typing import Callable
from typing import Dict
from typing import List
from typing import Optional
from typing import TypeVar

from retain_ros.evaluation.adaptive_schedule import AdaptiveSchedule
from retain_ros.evaluation.schedule import AlphaSchedule
from retain_ros.evaluation.schedule import parse_settings
from retain_ros.evaluation.sequential import SequentialDesign
from retain_ros.runtime.startup import StartupError

T = TypeVar('T')


class EpisodeSchedule:
    """The settings of the coming episodes, one drawn ahead.

    :param config: the node's :class:`~retain_ros.ros.policy_node.config.NodeConfig`; needs a
        non-empty ``alpha_schedule``.
    :raises ScheduleError: a bad ``alpha_schedule`` (a ``ValueError``).
    :raises StartupError: sequential parameters the design refuses (e.g. a budget too small for
        the power at the gap); the message starts with the parameters' values.
    """

    def __init__(self, config):
        settings = [s for s in config.alpha_schedule if str(s).strip()]
        parsed = parse_settings(settings)   # ScheduleError names a bad setting
        self.sequential = bool(config.sequential)
        self.blind = bool(config.blind)
        if self.sequential:
            try:
                design = SequentialDesign(
                    level=float(config.sequential_level), power=float(config.sequential_power),
                    gap=float(config.sequential_gap), budget=int(config.sequential_budget),
                    reference=config.sequential_reference.strip())
                schedule = AdaptiveSchedule(settings, design, seed=int(config.schedule_seed),
                                            blind=self.blind)
            except ValueError as exc:   # the settings parsed above: the design refuses
                raise StartupError(
                    f'sequential_budget={config.sequential_budget}, sequential_gap='
                    f'{config.sequential_gap:g}, sequential_power={config.sequential_power:g}, '
                    f'sequential_level={config.sequential_level:g}, sequential_reference='
                    f'{config.sequential_reference!r}: {exc}') from None
            self._schedule = schedule
        else:
            self._schedule = AlphaSchedule(settings, repeats=int(config.schedule_repeats),
                                           seed=int(config.schedule_seed), blind=self.blind)
        self._labels = [self._schedule.label(p) for p in parsed]
        self._pending: Optional[Dict[str, float]] = None
        self._running: Optional[Dict[str, float]] = None
        #: why no episode is left (``'schedule exhausted'``, ``'decided'``, ``'budget'``) or None
        self.finished: Optional[str] = None
        self._draw()

    # ------------------------------------------------------------------ what the node shows
    @property
    def labels(self) -> List[str]:
        """Labels of all settings, in schedule order (opaque ``'setting C'`` when blind)."""
        return list(self._labels)

    @property
    def total(self) -> int:
        """Episodes of the whole schedule (the budget bound when sequential)."""
        return int(self._schedule.total)

    @property
    def remaining(self) -> int:
        """Episodes left at most, the one drawn ahead included (0 once finished)."""
        if self.finished is not None:
            return 0
        if self.sequential:   # counts every episode not yet recorded
            return int(self._schedule.remaining)
        # the fixed schedule counts the ones not yet handed out: add the one drawn ahead
        return int(self._schedule.remaining) + (1 if self._pending is not None else 0)

    @property
    def next_params(self) -> Optional[Dict[str, float]]:
        """Node parameters of the next episode; None while one runs or once finished."""
        return None if self._pending is None else dict(self._pending)

    def label(self, params: Optional[Dict[str, float]]) -> Optional[str]:
        """Return the operator's label of ``params`` (None for None)."""
        return None if params is None else self._schedule.label(params)

    def status(self) -> Optional[Dict[str, Any]]:
        """Return the sequential test's state (blind-safe when blind), None when fixed."""
        return self._schedule.status() if self.sequential else None

    def finished_message(self) -> str:
        """Return the refusal of a start once finished: ``'evaluation finished: ...'``."""
        if self.sequential:
            summary = self._schedule.status().get('summary') or self.finished
            return f'evaluation finished: {summary}'
        return (f'evaluation finished: alpha schedule exhausted ({self.total} episodes '
                'done)')

    # ------------------------------------------------------------------ episode events
    def started(self) -> Dict[str, float]:
        """Mark the setting drawn ahead as running; return it.

        :raises StopIteration: when the schedule is finished (:meth:`finished_message`).
        :raises RuntimeError: when an episode already runs.
        """
        if self._running is not None:
            raise RuntimeError('an episode of the schedule is already running')
        if self._pending is None:
            raise StopIteration(self.finished_message())
        self._running, self._pending = self._pending, None
        return dict(self._running)

    def record(self, success: bool, tag: str, write: Callable[[Optional[Dict[str, Any]]], T]
               ) -> T:
        """Count the running episode's outcome once ``write`` has logged it; draw the next.

        :param success: the outcome.
        :param tag: the episode's scene tag (pairs of a block should share one).
        :param write: writes the episode's log line, given the sequential status as it is
            after this outcome (None when fixed); when it raises, nothing is counted, the
            setting is offered again and the error propagates, so the test never counts an
            episode the log lacks.
        :return: what ``write`` returned.
        """
        if self.sequential:
            trial = copy.deepcopy(self._schedule)
            trial.record(bool(success), str(tag or ''))
            status = trial.status()
        else:
            trial, status = self._schedule, None
        try:
            result = write(status)
        except BaseException:
            self.abort()
            raise
        self._schedule = trial
        self._running = None
        self._draw()
        return result

    def abort(self) -> None:
        """Do not count the running episode; offer its setting again next."""
        if self._running is None:
            return
        if self.sequential:
            self._schedule.abort()
            self._running = None
            self._draw()
        else:   # the fixed schedule already moved on: hand the same setting out again
            self._pending, self._running = self._running, None

    def _draw(self) -> None:
        try:
            self._pending = self._schedule.next()
        except StopIteration:
            self._pending = None
            if self.sequential:
                self.finished = self._schedule.status().get('stopped') or 'decided'
            else:
                self.finished = 'schedule exhausted'
