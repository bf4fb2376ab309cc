"""Counting episodes per merge setting and split: :func:`summarize` and its :class:`Summary`.

A merge setting is the effective alpha of every parameter group (alpha = weight on the FINETUNED
model, 0 = pretrained, 1 = finetuned) and the recipe; a split is where the episode ran
(``new_id``: the new task in its training distribution, ``new_ood``: the new task under held-out
variations, ``generalist``: the pretraining tasks). Each (setting, split) and (setting, split,
task) gets a :class:`Cell` of outcome counts with its 95% Wilson interval.
"""
from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
import logging
from typing import Any
from typing import Dict
from typing import Iterable
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

from retain_ros.evaluation.loading import validate_episode
from retain_ros.evaluation.stats import wilson_interval

LOG = logging.getLogger(__name__)

#: the three splits of the RETAIN evaluation, in display order, with their display names
SPLIT_NAMES = {
    'new_id': 'new task, in-distribution',
    'new_ood': 'new task, OOD variations',
    'generalist': 'generalist tasks',
}
#: short split names for table headers
SPLIT_SHORT = {'new_id': 'new task ID', 'new_ood': 'new task OOD', 'generalist': 'generalist'}
#: the alpha convention, printed in every report
CONVENTION = 'alpha = weight on the finetuned model: 0 = pretrained, 1 = finetuned'
_EPS = 1e-9


@dataclass(frozen=True)
class Setting:
    """One merge setting: the effective alpha per group (and the recipe).

    :param alphas: ``((group, alpha), ...)`` sorted in
        :data:`~retain_ros.evaluation.loading.GROUP_ORDER`.
    :param recipe: merge recipe name ('' when the log has none).
    """

    alphas: Tuple[Tuple[str, float], ...]
    recipe: str = ''

    @property
    def values(self) -> Dict[str, float]:
        """The alpha per group as a dict."""
        return dict(self.alphas)

    @property
    def uniform(self) -> bool:
        """True when every group has the same alpha (a plain RETAIN / WiSE-FT merge)."""
        vals = [a for _, a in self.alphas]
        return bool(vals) and max(vals) - min(vals) < _EPS

    @property
    def x(self) -> Optional[float]:
        """The alpha of a uniform merge (``None`` for per-group merges)."""
        return self.alphas[0][1] if self.uniform else None

    def label(self, with_recipe: bool = False) -> str:
        """Return short text: ``'alpha=0.5'`` or ``'language=0.8, others=1'``.

        :param with_recipe: prefix the recipe name (``'interpolate: alpha=0.5'``).
        :return: the label.
        """
        if self.uniform:
            text = f'alpha={self.x:g}'
        else:
            counts: Dict[float, int] = {}
            for _, a in self.alphas:
                counts[round(a, 9)] = counts.get(round(a, 9), 0) + 1
            base = max(counts, key=lambda a: (counts[a], a))
            if counts[base] > 1:
                parts = [f'{g}={a:g}' for g, a in self.alphas if abs(a - base) > _EPS]
                text = ', '.join(parts + [f'others={base:g}'])
            else:
                text = ', '.join(f'{g}={a:g}' for g, a in self.alphas)
        if with_recipe and self.recipe:
            text = f'{self.recipe}: {text}'
        return text

    def sort_key(self):
        """Return the display order key: recipe, uniform merges first by alpha, then the rest."""
        return (self.recipe, not self.uniform,
                self.x if self.uniform else 0.0, [-a for _, a in self.alphas])


@dataclass
class Cell:
    """Outcome counts of one (setting, split) or (setting, split, task)."""

    n: int = 0
    k: int = 0

    @property
    def rate(self) -> Optional[float]:
        """Success rate ``k / n``; ``None`` without episodes."""
        return self.k / self.n if self.n else None

    @property
    def interval(self) -> Tuple[float, float]:
        """95% Wilson interval of the success rate."""
        return wilson_interval(self.k, self.n)

    def to_dict(self) -> Dict[str, Any]:
        """Return ``{'n', 'k', 'rate', 'low', 'high'}``."""
        low, high = self.interval
        return {'n': self.n, 'k': self.k, 'rate': self.rate, 'low': low, 'high': high}


@dataclass
class Summary:
    """Counts per merge setting and split, ready to print or plot."""

    settings: List[Setting]
    splits: List[str]
    cells: Dict[Tuple[Setting, str], Cell]
    n_episodes: int
    skipped: int = 0
    sources: List[str] = field(default_factory=list)
    fingerprints: Dict[Setting, List[str]] = field(default_factory=dict)
    multi_recipe: bool = False
    task_cells: Dict[Tuple[Setting, str, str], Cell] = field(default_factory=dict)
    aborted: int = 0
    sequential: Optional[Dict[str, Any]] = None
    schedule_labels: Dict[str, str] = field(default_factory=dict)

    def unblind(self, label: str) -> str:
        """Return a schedule label with its setting: ``'setting C (alpha=0.5)'``.

        Labels that already are the setting (not blind) and unknown labels come back as given.
        """
        setting = self.schedule_labels.get(label)
        return f'{label} ({setting})' if setting and setting != label else label

    def cell(self, setting: Setting, split: str) -> Cell:
        """Return the counts of ``setting`` on ``split`` (an empty cell when none ran)."""
        return self.cells.get((setting, split), Cell())

    def tasks(self, split: str) -> List[str]:
        """Task names seen in ``split`` (sorted)."""
        return sorted({t for (_, sp, t) in self.task_cells if sp == split})

    def task_cell(self, setting: Setting, split: str, task: str) -> Cell:
        """Return the counts of ``setting`` on ``task`` of ``split`` (empty when none ran)."""
        return self.task_cells.get((setting, split, task), Cell())

    def label(self, setting: Setting) -> str:
        """Return the label of ``setting``, with its recipe when the logs mix recipes."""
        return setting.label(with_recipe=self.multi_recipe)

    def best(self, split: str) -> Optional[Setting]:
        """Return the setting with the highest success rate on ``split`` (ties: larger n).

        None when no setting has a success there (a "best" of all-zero rates means nothing).
        """
        leaders = self.leaders(split)
        return max(leaders, key=lambda st: self.cell(st, split).n) if leaders else None

    def leaders(self, split: str) -> List[Setting]:
        """Return all settings sharing the highest success rate on ``split``; empty when 0."""
        cells = [(st, self.cell(st, split)) for st in self.settings]
        rates = [c.rate for _, c in cells if c.n]
        if not rates or max(rates) <= 0:
            return []
        return [st for st, c in cells if c.n and c.rate == max(rates)]

    def leaders_text(self, split: str) -> str:
        """Describe the leaders of ``split``.

        E.g. ``alpha=0.5 (7/8)``, ``alpha=0, alpha=1 (8/8, tied)``, ``none (no successes)``.
        """
        leaders = self.leaders(split)
        if not leaders:
            return 'none (no successes)'
        cell = self.cell(leaders[0], split)
        text = ', '.join(self.label(st) for st in leaders)
        return f'{text} ({cell.k}/{cell.n}{", tied" if len(leaders) > 1 else ""})'

    def to_dict(self) -> Dict[str, Any]:
        """Return the JSON-able form: one row per setting, one entry per split."""
        rows = []
        for setting in self.settings:
            rows.append({
                'setting': self.label(setting),
                'alpha': setting.values,
                'uniform': setting.uniform,
                'recipe': setting.recipe,
                'fingerprints': self.fingerprints.get(setting, []),
                'splits': {s: self.cell(setting, s).to_dict() for s in self.splits
                           if self.cell(setting, s).n},
            })
        return {'convention': CONVENTION, 'episodes': self.n_episodes, 'skipped': self.skipped,
                'aborted': self.aborted, 'sources': self.sources, 'splits': self.splits,
                'rows': rows, 'sequential': self.sequential,
                'schedule_labels': dict(self.schedule_labels)}


def _split_order(splits: Iterable[str]) -> List[str]:
    present = set(splits)
    known = [s for s in SPLIT_NAMES if s in present]
    return known + sorted(present - set(SPLIT_NAMES))


def summarize(episodes: Iterable[Dict[str, Any]], skipped: int = 0,
              sources: Sequence[str] = (), aborted: int = 0,
              sequential: Optional[Dict[str, Any]] = None,
              labels: Optional[Dict[str, Dict[str, float]]] = None) -> Summary:
    """Count successes per merge setting and split.

    :param episodes: records from :func:`~retain_ros.evaluation.loading.load_episodes` (raw
        log dicts are accepted too).
    :param skipped: malformed lines to mention in the output.
    :param sources: log paths to mention in the output.
    :param aborted: aborted episodes (not counted) to mention in the output.
    :param sequential: the sequential test's last state (printed as decisions).
    :param labels: schedule label -> effective alpha per group (to unblind the decisions).
    :return: the :class:`Summary`, settings sorted by :meth:`Setting.sort_key`.
    :raises ValueError: when a raw record is not a valid episode.
    """
    cells: Dict[Tuple[Setting, str], Cell] = {}
    task_cells: Dict[Tuple[Setting, str, str], Cell] = {}
    fingerprints: Dict[Setting, List[str]] = {}
    settings = set()
    splits = set()
    recipes = set()
    count = 0
    for record in episodes:
        if '_alphas' not in record:
            record = validate_episode(record)
        alphas = record['_alphas']
        recipe = str(record.get('recipe') or '')
        setting = Setting(tuple((g, round(a, 9)) for g, a in alphas.items()), recipe)
        split = record['split']
        cell = cells.setdefault((setting, split), Cell())
        cell.n += 1
        cell.k += int(bool(record['success']))
        task = str(record.get('task') or '?')
        tcell = task_cells.setdefault((setting, split, task), Cell())
        tcell.n += 1
        tcell.k += int(bool(record['success']))
        settings.add(setting)
        splits.add(split)
        recipes.add(recipe)
        fp = record.get('fingerprint')
        if fp and fp not in fingerprints.setdefault(setting, []):
            fingerprints[setting].append(str(fp))
        count += 1
    ordered = sorted(settings, key=Setting.sort_key)
    for setting in ordered:
        if len(fingerprints.get(setting, [])) > 1:
            LOG.warning('setting %s has %d different weight fingerprints: the logs mix '
                        'different checkpoints', setting.label(), len(fingerprints[setting]))
    return Summary(settings=ordered, splits=_split_order(splits), cells=cells, n_episodes=count,
                   skipped=skipped, sources=[str(s) for s in sources], fingerprints=fingerprints,
                   multi_recipe=len(recipes) > 1, task_cells=task_cells, aborted=aborted,
                   sequential=sequential,
                   schedule_labels={name: Setting(tuple((g, round(a, 9))
                                                        for g, a in alphas.items())).label()
                                    for name, alphas in (labels or {}).items()})
