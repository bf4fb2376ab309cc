"""The adaptive demo sweep (``retain-ros demo --adaptive``): the node's sequential test decides.

Instead of a fixed number of episodes per setting, the policy node runs its sequential schedule
(``alpha_schedule`` = the demo's settings, ``sequential: true``; :mod:`retain_ros.evaluation.
adaptive_schedule`): at every ``~/start_episode`` it applies the setting it wants next, drops a
setting once the test has decided that it is worse, and answers ``evaluation finished: ...`` when
every comparison is decided or the budget is spent. The demo only sets the scene and lets the sim
judge the episode, so the loop here is the one an operator runs on a real robot.

Scenes: the schedule runs in blocks (every remaining setting once per block), and the episodes of
one block are the pairs of the paired test, so block ``n`` runs scene ``n`` for every setting;
the demo learns which setting comes next from the node's ``~/evaluation`` topic and gives it the
scene of its own episode count. The scenes are the fixed sweep's (same seeds, same tasks), the
splits interleaved block by block (generalist, new task ID, new task OOD, generalist, ...), so a
budget of ``3 x --episodes`` per setting runs exactly the fixed sweep's scenes when nothing is
decided early. No rclpy here: the driver is passed in.
"""
from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
import math
from typing import Any
from typing import Callable
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

from retain_ros.evaluation.adaptive_schedule import AdaptiveSchedule
from retain_ros.evaluation.schedule import describe
from retain_ros.evaluation.schedule import parse_setting
from retain_ros.evaluation.schedule import ScheduleError
from retain_ros.evaluation.sequential import SequentialDesign
from retain_ros.ros.closed_loop_demo.sweep import DemoError
from retain_ros.ros.closed_loop_demo.sweep import split_scenes
from retain_ros.sim.tasks import SPLITS

#: defaults of the demo's sequential design (the node's ``sequential_*`` parameters); with the
#: default budget (30 per setting, the fixed sweep's) the design gap must be large: 0.5 is the
#: smallest in steps of 0.05 that reaches 80% power over the default sweep's 7 settings both
#: against the reference (6 comparisons) and with 'best' (21)
REFERENCE = 'alpha=1'
LEVEL = 0.05
POWER = 0.8
GAP = 0.5

Scene = Tuple[str, str, int]


@dataclass(frozen=True)
class AdaptiveOptions:
    """The sequential design of an adaptive demo run (checked by :meth:`check`).

    :param reference: the setting every other is compared with, or ``'best'`` (all pairs).
    :param level: family-wise false-positive rate over all comparisons.
    :param power: target power at the design gap.
    :param gap: design gap in success rate.
    :param budget: episodes per setting at most.
    """

    reference: str = REFERENCE
    level: float = LEVEL
    power: float = POWER
    gap: float = GAP
    budget: int = 30

    def check(self, settings: Sequence[Dict[str, float]]) -> str:
        """Validate against the demo's settings; return the reference as the schedule names it.

        Builds the node's :class:`~retain_ros.evaluation.adaptive_schedule.AdaptiveSchedule`
        once, so a design the node would refuse at configure (a value out of range, a reference
        that is not a setting, a budget that cannot reach the power) fails before anything runs.

        :raises DemoError: the design cannot be used; the message says what to change.
        """
        names = [describe(p) for p in settings]
        reference = self.reference.strip()
        if reference.lower() == 'best':
            reference = 'best'
        else:
            try:
                reference = describe(parse_setting(reference))
            except ScheduleError as exc:
                raise DemoError(f'--reference {self.reference!r}: {exc}') from None
        try:
            design = SequentialDesign(level=self.level, power=self.power, gap=self.gap,
                                      budget=self.budget, reference=reference)
            AdaptiveSchedule(names, design)
        except ScheduleError as exc:   # DesignError, BudgetError
            raise DemoError(f'the adaptive sweep cannot use --reference {self.reference} '
                            f'--level {self.level:g} --power {self.power:g} --gap '
                            f'{self.gap:g} --budget {self.budget} over {len(names)} settings: '
                            f'{exc}') from None
        return reference


def adaptive_scenes(budget: int, seed: int, splits: Sequence[str] = SPLITS) -> List[Scene]:
    """Return the scene of every block: the fixed sweep's scenes, splits interleaved.

    :param budget: episodes per setting at most (= the number of blocks).
    :param seed: the demo's ``--seed``.
    :param splits: the splits, taken in turn.
    """
    per_split = math.ceil(budget / len(splits))
    by_split = [split_scenes(split, per_split, seed) for split in splits]
    return [by_split[n % len(splits)][n // len(splits)] for n in range(budget)]


def sequential_params(settings: Sequence[Dict[str, float]], options: AdaptiveOptions,
                      seed: int) -> Dict[str, object]:
    """Return the policy node's parameters of the sequential schedule over ``settings``.

    :param settings: the demo's settings (node parameters, :func:`build_settings`).
    :param options: the sequential design.
    :param seed: the schedule's seed (block order).
    :raises DemoError: see :meth:`AdaptiveOptions.check`.
    """
    reference = options.check(settings)
    return {'alpha_schedule': [describe(p) for p in settings], 'schedule_seed': int(seed),
            'sequential': True, 'sequential_reference': reference,
            'sequential_level': float(options.level), 'sequential_power': float(options.power),
            'sequential_gap': float(options.gap), 'sequential_budget': int(options.budget)}


@dataclass
class AdaptiveResult:
    """What an adaptive run did: per setting ``[episodes, successes]``, the node's last state."""

    counts: Dict[str, List[int]] = field(default_factory=dict)
    state: Dict[str, Any] = field(default_factory=dict)
    scenes: List[Tuple[str, str]] = field(default_factory=list)

    @property
    def episodes(self) -> int:
        """Episodes counted over all settings."""
        return sum(n for n, _ in self.counts.values())


def run_adaptive(driver, scenes: Sequence[Scene], timeout: float,
                 progress: Optional[Callable[[str, bool, dict], None]] = None
                 ) -> AdaptiveResult:
    """Run episodes of the node's sequential schedule until it says the evaluation is finished.

    :param driver: an :class:`~retain_ros.ros.closed_loop_demo.driver.EpisodeDriver` (its
        ``evaluation`` and ``run_scheduled_episode``).
    :param scenes: the scene of each block (:func:`adaptive_scenes`).
    :param timeout: the episode timeout (s).
    :param progress: called after every episode with the setting's label, its success and the
        node's evaluation state.
    :return: the :class:`AdaptiveResult`.
    :raises DemoError: the node's state is missing or inconsistent, or a setting needs more
        scenes than the budget.
    """
    result = AdaptiveResult()
    state = driver.evaluation()
    while not state.get('finished') and state.get('next'):
        label = state['next']
        done = result.counts.setdefault(label, [0, 0])
        if done[0] >= len(scenes):
            raise DemoError(f'the node offers {label} an episode beyond its budget '
                            f'({len(scenes)} scenes)')
        split, task, seed = scenes[done[0]]
        before = int(state.get('episodes_done') or 0)
        reply, outcome = driver.run_scheduled_episode(split, task, seed, timeout)
        if reply is None:
            break
        if reply.get('setting') != label:
            raise DemoError(f'the node announced {label} next but started {reply.get("setting")}')
        success = bool(outcome.get('success'))
        done[0] += 1
        done[1] += int(success)
        result.scenes.append((label, reply.get('tag', '')))
        state = driver.evaluation(done=before + 1)
        if progress is not None:
            progress(label, success, state)
    result.state = state
    return result


def format_result(result: AdaptiveResult, settings: int, fixed_episodes: int,
                  fixed_per_cell: int) -> str:
    """Return the adaptive run's decisions and episode count next to the fixed sweep's.

    :param result: the run (:func:`run_adaptive`).
    :param settings: how many settings the sweep has.
    :param fixed_episodes: episodes the fixed sweep runs on the same settings.
    :param fixed_per_cell: the fixed sweep's episodes per setting and split.
    """
    status = result.state.get('sequential') or {}
    design = status.get('design') or {}
    lines = [f"[demo] adaptive sweep finished: {result.state.get('finished') or 'stopped'}"]
    if design:
        lines.append('  design: ' + ', '.join(f'{k} {v}' for k, v in design.items()))
    comparisons = status.get('comparisons') or []
    if comparisons:
        width = max(len(f"{c['a']} vs {c['b']}") for c in comparisons)
        lines.append(f"  {'comparison':<{width}}  pairs  e-value  p (Holm)  decision")
        for c in comparisons:
            lines.append(f"  {c['a'] + ' vs ' + c['b']:<{width}}  {c['pairs']:>5}  "
                         f"{float(c['e_value']):>7.3g}  {float(c['p_value']):>8.3g}  "
                         f"{c['decision']}")
    if status.get('dropped'):
        lines.append(f"  dropped (decided worse): {', '.join(status['dropped'])}")
    if status.get('settings_left') is not None:
        lines.append(f"  left: {', '.join(status['settings_left']) or 'none'}")
    width = max([len(k) for k in result.counts] + [7])
    lines.append(f"  {'setting':<{width}}  episodes  successes")
    for label, (n, won) in sorted(result.counts.items()):
        lines.append(f'  {label:<{width}}  {n:>8}  {won:>9}')
    used = result.episodes
    change = used / fixed_episodes - 1.0 if fixed_episodes else 0.0
    lines.append(f'[demo] episodes used: {used} over {settings} settings; the fixed sweep runs '
                 f'{fixed_episodes} ({fixed_per_cell} per setting and split) on the same scenes: '
                 f'{abs(change):.0%} {"fewer" if change <= 0 else "more"}')
    return '\n'.join(lines)
