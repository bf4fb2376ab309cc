"""``retain-ros report``: success rate per alpha and per split from episode logs.

Reads the JSON lines written by :class:`retain_ros.evaluation.episodes.EpisodeRecorder`, groups
episodes by merge setting (the effective alpha of every parameter group; alpha = weight on the
FINETUNED model, 0 = pretrained, 1 = finetuned) and by split (``new_id``: the new task in its
training distribution, ``new_ood``: the new task under held-out variations, ``generalist``: the
pretraining tasks), and reports success rates with 95% Wilson intervals as a text table, a
markdown file and a plot.

Function API (used by ``retain-ros demo``)::

    episodes, skipped = load_episodes(['episodes.jsonl'])
    summary = summarize(episodes, skipped=skipped)
    print(format_table(summary))
    plot_summary(summary, 'success.png')
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from dataclasses import field
import json
import logging
import math
import os
import sys
from typing import Any
from typing import Dict
from typing import Iterable
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple
from typing import Union

from retain_ros.evaluation.stats import wilson_interval

LOG = logging.getLogger(__name__)

#: the three splits of the RETAIN evaluation, in display order, with their display names
SPLIT_NAMES = {
    'new_id': 'new task, in-distribution',
    'new_ood': 'new task, OOD variations',
    'generalist': 'generalist tasks',
}
SPLIT_SHORT = {'new_id': 'new task ID', 'new_ood': 'new task OOD', 'generalist': 'generalist'}
SPLIT_COLORS = {'new_id': '#1f77b4', 'new_ood': '#d62728', 'generalist': '#2ca02c'}
SPLIT_MARKERS = {'new_id': 'o', 'new_ood': 's', 'generalist': '^'}
GROUP_ORDER = ('vision', 'language', 'action', 'other')
CONVENTION = 'alpha = weight on the finetuned model: 0 = pretrained, 1 = finetuned'
UNKNOWN_SPLIT = 'unknown'
_EPS = 1e-9


@dataclass(frozen=True)
class Setting:
    """One merge setting: the effective alpha per group (and the recipe).

    :param alphas: ``((group, alpha), ...)`` sorted in :data:`GROUP_ORDER`.
    :param recipe: merge recipe name ('' when the log has none).
    """

    alphas: Tuple[Tuple[str, float], ...]
    recipe: str = ''

    @property
    def values(self) -> Dict[str, float]:
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
        """Short text: ``'alpha=0.5'`` or ``'language=0.8, others=1'``."""
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
        return (self.recipe, not self.uniform,
                self.x if self.uniform else 0.0, [-a for _, a in self.alphas])


@dataclass
class Cell:
    """Outcome counts of one (setting, split)."""

    n: int = 0
    k: int = 0

    @property
    def rate(self) -> Optional[float]:
        return self.k / self.n if self.n else None

    @property
    def interval(self) -> Tuple[float, float]:
        return wilson_interval(self.k, self.n)

    def to_dict(self) -> Dict[str, Any]:
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

    def cell(self, setting: Setting, split: str) -> Cell:
        return self.cells.get((setting, split), Cell())

    def tasks(self, split: str) -> List[str]:
        """Task names seen in ``split`` (sorted)."""
        return sorted({t for (_, sp, t) in self.task_cells if sp == split})

    def task_cell(self, setting: Setting, split: str, task: str) -> Cell:
        return self.task_cells.get((setting, split, task), Cell())

    def label(self, setting: Setting) -> str:
        return setting.label(with_recipe=self.multi_recipe)

    def best(self, split: str) -> Optional[Setting]:
        """Return the setting with the highest success rate on ``split`` (ties: larger n).

        None when no setting has a success there (a "best" of all-zero rates means nothing).
        """
        leaders = self.leaders(split)
        return max(leaders, key=lambda st: self.cell(st, split).n) if leaders else None

    def leaders(self, split: str) -> List[Setting]:
        """All settings sharing the highest success rate on ``split``; empty when it is 0."""
        cells = [(st, self.cell(st, split)) for st in self.settings]
        rates = [c.rate for _, c in cells if c.n]
        if not rates or max(rates) <= 0:
            return []
        return [st for st, c in cells if c.n and c.rate == max(rates)]

    def leaders_text(self, split: str) -> str:
        """E.g. ``alpha=0.5 (7/8)``, ``alpha=0, alpha=1 (8/8, tied)``, ``none (no successes)``."""
        leaders = self.leaders(split)
        if not leaders:
            return 'none (no successes)'
        cell = self.cell(leaders[0], split)
        text = ', '.join(self.label(st) for st in leaders)
        return f'{text} ({cell.k}/{cell.n}{", tied" if len(leaders) > 1 else ""})'

    def to_dict(self) -> Dict[str, Any]:
        """JSON-able form: one row per setting, one entry per split."""
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
                'sources': self.sources, 'splits': self.splits, 'rows': rows}


# ------------------------------------------------------------------------------------ loading

def _normalize_alphas(raw: Any) -> Dict[str, float]:
    """Get the alpha per group from a log's ``alpha`` field (groups, node params or a number)."""
    if isinstance(raw, bool):
        raise ValueError('alpha is a boolean')
    if isinstance(raw, (int, float)):
        raw = {'alpha': raw}
    if not isinstance(raw, dict) or not raw:
        raise ValueError('alpha must be a non-empty dict or a number')
    values = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f'alpha[{key!r}] is not a number')
        if not math.isfinite(value):
            raise ValueError(f'alpha[{key!r}] is not finite')
        key = str(key)
        values[key[len('alpha_'):] if key.startswith('alpha_') else key] = float(value)
    base = values.pop('alpha', None)
    out = {}
    for group in GROUP_ORDER:
        value = values.pop(group, None)
        if value is None or value < 0:  # -1 = follow alpha
            value = base
        if value is not None:
            out[group] = value
    for group in sorted(values):  # family-specific groups the report does not know
        out[group] = base if values[group] < 0 and base is not None else values[group]
    if not out:
        raise ValueError('alpha has no group values')
    return out


def _validate(record: Any) -> Dict[str, Any]:
    if not isinstance(record, dict):
        raise ValueError('not a JSON object')
    if not isinstance(record.get('success'), bool):
        raise ValueError('no boolean "success"')
    alphas = _normalize_alphas(record.get('alpha'))
    split = record.get('split')
    if split is None:
        from retain_ros.evaluation.episodes import parse_tag
        split = parse_tag(record.get('tag') if isinstance(record.get('tag'), str) else '').get(
            'split')
    record = dict(record)
    record['split'] = str(split) if split else UNKNOWN_SPLIT
    record['_alphas'] = alphas
    return record


def load_episodes(paths: Union[str, Sequence[str]]) -> Tuple[List[Dict[str, Any]], int]:
    """Read episode logs.

    Lines that are not valid episodes (bad JSON, no boolean ``success``, no usable ``alpha``) are
    skipped with one warning per file that counts them; blank lines are ignored.

    :param paths: one path or several.
    :return: ``(episodes, skipped)``; every episode has its ``split`` filled in (``'unknown'``
        when the log had none) and its effective per-group alphas under ``'_alphas'``.
    :raises FileNotFoundError: when a path does not exist.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    episodes: List[Dict[str, Any]] = []
    skipped = 0
    for path in paths:
        bad: List[str] = []
        with open(path, encoding='utf-8') as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    episodes.append(_validate(json.loads(line)))
                except ValueError as exc:
                    bad.append(f'line {number}: {exc}')
        if bad:
            skipped += len(bad)
            LOG.warning('%s: skipped %d malformed line(s) (%s%s)', path, len(bad),
                        '; '.join(bad[:3]), '; ...' if len(bad) > 3 else '')
    return episodes, skipped


def _split_order(splits: Iterable[str]) -> List[str]:
    present = set(splits)
    known = [s for s in SPLIT_NAMES if s in present]
    return known + sorted(present - set(SPLIT_NAMES))


def summarize(episodes: Iterable[Dict[str, Any]], skipped: int = 0,
              sources: Sequence[str] = ()) -> Summary:
    """Count successes per merge setting and split.

    :param episodes: records from :func:`load_episodes` (raw log dicts are accepted too).
    :param skipped: malformed lines to mention in the output.
    :param sources: log paths to mention in the output.
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
            record = _validate(record)
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
                   multi_recipe=len(recipes) > 1, task_cells=task_cells)


# ----------------------------------------------------------------------------------- printing

def _split_title(split: str) -> str:
    return SPLIT_SHORT.get(split, split)


def _cell_text(cell: Cell) -> str:
    if not cell.n:
        return '-'
    low, high = cell.interval
    return (f'{cell.k:>3d}/{cell.n:<3d}{100 * cell.rate:>4.0f}%  '
            f'[{100 * low:>3.0f}-{100 * high:>3.0f}%]')


def _header_lines(summary: Summary) -> List[str]:
    lines = [f'Success rate per merge setting ({CONVENTION})',
             f'95% Wilson intervals; {summary.n_episodes} episode(s)'
             + (f' from {", ".join(summary.sources)}' if summary.sources else '')]
    if summary.skipped:
        lines.append(f'WARNING: {summary.skipped} malformed line(s) skipped')
    return lines


def format_table(summary: Summary) -> str:
    """Plain-text table: one row per setting, one ``k/n rate [low-high]`` column per split."""
    lines = _header_lines(summary)
    if not summary.n_episodes:
        return '\n'.join(lines + ['', 'no episodes'])
    headers = ['setting'] + [_split_title(s) for s in summary.splits]
    rows = [[summary.label(st)] + [_cell_text(summary.cell(st, sp)) for sp in summary.splits]
            for st in summary.settings]
    widths = [max(len(r[i]) for r in [headers] + rows) for i in range(len(headers))]

    def fmt(row):
        return ' | '.join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
    lines += ['', fmt(headers), '-+-'.join('-' * w for w in widths)]
    lines += [fmt(r) for r in rows]
    lines += ['', 'cells: successes/episodes  rate  [95% Wilson interval]']
    lines += [f'  {_split_title(s)} = {SPLIT_NAMES[s]}' for s in summary.splits
              if s in SPLIT_NAMES]
    lines.append('highest observed rate: ' + '; '.join(
        f'{_split_title(s)}: {summary.leaders_text(s)}' for s in summary.splits))
    lines.append('  (overlapping intervals mean the data do not separate those settings)')
    return '\n'.join(lines)


def format_task_table(summary: Summary) -> str:
    """Plain-text table per task: one row per setting, one column per (split, task)."""
    columns = [(sp, t) for sp in summary.splits for t in summary.tasks(sp)]
    if not columns:
        return 'no episodes'
    headers = ['setting'] + [f'{_split_title(sp)}: {t}' for sp, t in columns]
    rows = [[summary.label(st)] + [_cell_text(summary.task_cell(st, sp, t)).strip()
                                   for sp, t in columns]
            for st in summary.settings]
    widths = [max(len(r[i]) for r in [headers] + rows) for i in range(len(headers))]
    lines = ['Success rate per task (k/n rate [95% Wilson interval])', '']
    lines.append(' | '.join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    lines.append('-+-'.join('-' * w for w in widths))
    lines += [' | '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return '\n'.join(lines)


def format_markdown(summary: Summary, plot_path: Optional[str] = None,
                    title: str = 'Evaluation rollouts: success rate per alpha') -> str:
    """Markdown report: header, table (with intervals), per-split best setting, plot link."""
    out = [f'# {title}', '']
    out += [f'- Convention: {CONVENTION} (θ = (1 − α)·θ_pre + α·θ_ft).',
            f'- Episodes: {summary.n_episodes}'
            + (f' from {", ".join(f"`{s}`" for s in summary.sources)}' if summary.sources
               else '') + '.',
            '- Cells: successes / episodes, success rate, 95% Wilson interval.']
    if summary.skipped:
        out.append(f'- **{summary.skipped} malformed log line(s) skipped.**')
    out.append('')
    if plot_path:
        out += [f'![success rate per alpha]({plot_path})', '']
    if not summary.n_episodes:
        return '\n'.join(out + ['No episodes.', ''])
    headers = ['setting', 'α per group (v / l / a)'] + [
        SPLIT_NAMES.get(s, s) for s in summary.splits]
    out.append('| ' + ' | '.join(headers) + ' |')
    out.append('|' + '|'.join(['---', '---'] + ['---:'] * len(summary.splits)) + '|')
    for setting in summary.settings:
        vals = setting.values
        per_group = ' / '.join(f'{vals[g]:g}' if g in vals else '?'
                               for g in ('vision', 'language', 'action'))
        cells = []
        for split in summary.splits:
            cell = summary.cell(setting, split)
            if not cell.n:
                cells.append('–')
                continue
            low, high = cell.interval
            cells.append(f'{cell.k}/{cell.n} = **{100 * cell.rate:.0f}%** '
                         f'[{100 * low:.0f}–{100 * high:.0f}%]')
        out.append('| ' + ' | '.join([summary.label(setting), per_group] + cells) + ' |')
    out.append('')
    for split in summary.splits:
        out.append(f'- Highest observed on {SPLIT_NAMES.get(split, split)}: '
                   f'{summary.leaders_text(split)}.')
    out += ['', 'Overlapping intervals mean the data do not separate those settings; '
            'run more episodes before choosing alpha.', '']
    columns = [(sp, t) for sp in summary.splits for t in summary.tasks(sp)]
    if len(columns) > len(summary.splits):
        out += ['## Per task', '']
        out.append('| setting | ' + ' | '.join(f'{_split_title(sp)}: `{t}`'
                                               for sp, t in columns) + ' |')
        out.append('|---|' + '|'.join(['---:'] * len(columns)) + '|')
        for setting in summary.settings:
            cells = []
            for sp, t in columns:
                cell = summary.task_cell(setting, sp, t)
                cells.append(f'{cell.k}/{cell.n} ({100 * cell.rate:.0f}%)' if cell.n else '–')
            out.append(f'| {summary.label(setting)} | ' + ' | '.join(cells) + ' |')
        out.append('')
    return '\n'.join(out)


# ----------------------------------------------------------------------------------- plotting

def _split_style(split: str, index: int) -> Tuple[str, str]:
    fallback = ['#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf']
    return (SPLIT_COLORS.get(split, fallback[index % len(fallback)]),
            SPLIT_MARKERS.get(split, 'D'))


def _n_text(ns: List[int]) -> str:
    if not ns:
        return ''
    lo, hi = min(ns), max(ns)
    return f'n={lo}' if lo == hi else f'n={lo}–{hi}'


def plot_summary(summary: Summary, path: str, title: Optional[str] = None,
                 bands: bool = False) -> str:
    """Draw success rate vs alpha, one line per split, with 95% Wilson bands and error bars.

    Uniform merges lie on the alpha axis; per-group merges (e.g. language-only) are drawn in a
    separate panel on the right, with the same colours, so they are never mistaken for a point
    on the curve.

    :param summary: from :func:`summarize`.
    :param path: output image (``.png``, ``.svg``, ``.pdf``); parent dirs are created.
    :param title: figure title (default names the convention).
    :param bands: also shade the Wilson intervals between points (busy with three splits).
    :return: ``path``.
    """
    import matplotlib
    matplotlib.use('Agg', force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    uniform = [s for s in summary.settings if s.uniform]
    other = [s for s in summary.settings if not s.uniform]
    splits = summary.splits or [UNKNOWN_SPLIT]
    has_side = bool(other)
    width_ratios = [3.2, 0.35 + 0.55 * len(other)] if has_side else [1]
    fig, axes = plt.subplots(
        1, 2 if has_side else 1, figsize=(10.5 if has_side else 8.5, 5.6), sharey=True,
        gridspec_kw={'width_ratios': width_ratios, 'wspace': 0.06}, squeeze=False)
    ax = axes[0][0]
    side = axes[0][1] if has_side else None
    nsplit = len(splits)
    xs_all = sorted({s.x for s in uniform})
    span = (max(xs_all) - min(xs_all)) if len(xs_all) > 1 else 1.0
    dx = 0.016 * span
    handles = []
    n_rows = []  # (split index, colour, [(x, n)], axes): n of every point, shown on top
    for i, split in enumerate(splits):
        color, marker = _split_style(split, i)
        offset = (i - (nsplit - 1) / 2.0) * dx
        pts = [(s.x, summary.cell(s, split)) for s in uniform if summary.cell(s, split).n]
        ns = [c.n for _, c in pts]
        side_pts = [(j, summary.cell(s, split)) for j, s in enumerate(other)
                    if summary.cell(s, split).n]
        ns += [c.n for _, c in side_pts]
        label = f'{SPLIT_NAMES.get(split, split)} ({_n_text(ns)} per point)'
        if pts:
            x = [p[0] for p in pts]
            y = [c.rate for _, c in pts]
            lo = [c.interval[0] for _, c in pts]
            hi = [c.interval[1] for _, c in pts]
            if bands:
                ax.fill_between(x, lo, hi, color=color, alpha=0.08, linewidth=0)
            handle = ax.errorbar(
                [v + offset for v in x], y, yerr=[[a - b for a, b in zip(y, lo)],
                                                  [b - a for a, b in zip(y, hi)]],
                color=color, marker=marker, markersize=7, linewidth=2, capsize=4,
                elinewidth=1.2, label=label, zorder=3)
            handles.append(handle)
            n_rows.append((i, color, [(xv + offset, c.n) for xv, c in pts], ax))
            # the best uniform alpha of this split (all leaders when tied), as a star
            best = max(y)
            if best > 0:
                for xv, yv in zip(x, y):
                    if yv == best:
                        ax.plot(xv + offset, yv, marker='*', markersize=17, color=color,
                                markeredgecolor='black', linestyle='none', zorder=4)
        if side is not None and side_pts:
            y = [c.rate for _, c in side_pts]
            lo = [c.interval[0] for _, c in side_pts]
            hi = [c.interval[1] for _, c in side_pts]
            side_off = (i - (nsplit - 1) / 2.0) * 0.16
            h2 = side.errorbar(
                [j + side_off for j, _ in side_pts], y,
                yerr=[[a - b for a, b in zip(y, lo)], [b - a for a, b in zip(y, hi)]],
                color=color, marker=marker, markersize=8, linestyle='none', capsize=4,
                elinewidth=1.2, markerfacecolor='white', markeredgewidth=2, zorder=3,
                label=None if pts else label)
            if not pts:
                handles.append(h2)
            n_rows.append((i, color, [(j + side_off, c.n) for j, c in side_pts], side))
    # n per point: in the legend when it is the same everywhere, else a row per split on top
    all_n = {n for _, _, row, _ in n_rows for _, n in row}
    top = 1.05
    if len(all_n) > 1:
        for r, color, row, axes_ in n_rows:
            level = 1.045 + 0.04 * (nsplit - 1 - r)
            for xv, n in row:
                axes_.text(xv, level, f'{n}', ha='center', va='bottom', fontsize=7, color=color)
        top = 1.06 + 0.04 * nsplit
        ax.text(0.0, 1.045 + 0.02 * nsplit, 'n ', transform=ax.get_yaxis_transform(),
                ha='right', va='center', fontsize=8, color='0.3')
    ax.set_ylim(-0.03, top)
    ax.set_yticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel('success rate (bars: 95% Wilson interval)')
    ax.grid(True, alpha=0.3)
    if xs_all:
        ticks = xs_all
        labels = []
        for v in ticks:
            name = {0.0: '\npretrained', 1.0: '\nfinetuned'}.get(v, '')
            labels.append(f'{v:g}{name}')
        ax.set_xticks(ticks)
        ax.set_xticklabels(labels)
        pad = 0.06 * span
        ax.set_xlim(min(xs_all) - pad, max(xs_all) + pad)
    else:
        ax.set_xlim(-0.05, 1.05)
        ax.text(0.5, 0.5, 'no uniform merges in the log', ha='center', va='center',
                transform=ax.transAxes, color='0.4')
    ax.set_xlabel('α = weight on the finetuned model   θ = (1 − α)·θ_pre + α·θ_ft')
    if side is not None:
        side.set_xticks(range(len(other)))
        side.set_xticklabels([summary.label(s).replace(', ', '\n') for s in other],
                             fontsize=8)
        side.set_xlim(-0.6, len(other) - 0.4)
        side.grid(True, axis='y', alpha=0.3)
        side.set_title('per-group merges', fontsize=10)
        side.tick_params(axis='y', left=False)
    if summary.n_episodes == 0:
        ax.text(0.5, 0.5, 'no episodes', ha='center', va='center', transform=ax.transAxes)
    fig.suptitle(title or 'Success rate vs merge coefficient α (RETAIN)', fontsize=13,
                 fontweight='bold')
    ax.set_title(f'{summary.n_episodes} episodes' + (
        f', {summary.skipped} malformed line(s) skipped' if summary.skipped else '')
        + '; ★ highest uniform-α rate per split; hollow markers: per-group merges',
        fontsize=9, color='0.3')
    if handles:
        fig.legend(handles=handles, loc='lower center', ncol=min(3, len(handles)),
                   frameon=False, fontsize=9, bbox_to_anchor=(0.5, 0.0))
    fig.subplots_adjust(left=0.08, right=0.98, top=0.88, bottom=0.22)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------- one call

def write_report(logs: Union[str, Sequence[str]], markdown: Optional[str] = None,
                 plot: Optional[str] = None, json_path: Optional[str] = None,
                 title: Optional[str] = None) -> Summary:
    """Load logs, summarize, and write the requested files (what ``retain-ros demo`` needs).

    :param logs: episode log path(s).
    :param markdown: markdown report path (links the plot relative to itself).
    :param plot: plot path (``.png``).
    :param json_path: summary JSON path.
    :param title: title of the plot and the markdown.
    :return: the :class:`Summary` (print it with :func:`format_table`).
    """
    paths = [logs] if isinstance(logs, (str, os.PathLike)) else list(logs)
    episodes, skipped = load_episodes(paths)
    summary = summarize(episodes, skipped=skipped, sources=[str(p) for p in paths])
    if plot:
        plot_summary(summary, plot, title=title)
    if markdown:
        plot_ref = None
        if plot:
            plot_ref = os.path.relpath(os.path.abspath(plot),
                                       os.path.dirname(os.path.abspath(markdown)))
        text = format_markdown(summary, plot_ref, **({'title': title} if title else {}))
        os.makedirs(os.path.dirname(os.path.abspath(markdown)), exist_ok=True)
        with open(markdown, 'w', encoding='utf-8') as handle:
            handle.write(text)
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with open(json_path, 'w', encoding='utf-8') as handle:
            json.dump(summary.to_dict(), handle, indent=2)
    return summary


# --------------------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='retain-ros report',
        description='Success rate per alpha setting and per split, with 95% Wilson intervals, '
                    f'from episode logs (JSON lines). Convention: {CONVENTION}.')
    parser.add_argument('logs', nargs='+', metavar='LOG.jsonl', help='episode log(s)')
    parser.add_argument('--plot', metavar='PNG', help='write the success-rate plot here')
    parser.add_argument('--markdown', metavar='MD', help='write a markdown report here')
    parser.add_argument('--json', metavar='JSON', help='write the summary as JSON here')
    parser.add_argument('--title', default=None, help='plot / markdown title')
    parser.add_argument('--by-task', action='store_true',
                        help='also print success per task')
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``retain-ros report``; returns the exit status."""
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    missing = [p for p in args.logs if not os.path.isfile(p)]
    if missing:
        print(f'retain-ros report: no such log file: {", ".join(missing)}', file=sys.stderr)
        return 2
    summary = write_report(args.logs, markdown=args.markdown, plot=args.plot,
                           json_path=args.json, title=args.title)
    print(format_table(summary))
    if args.by_task and summary.n_episodes:
        print()
        print(format_task_table(summary))
    for what, path in (('plot', args.plot), ('markdown', args.markdown), ('json', args.json)):
        if path:
            print(f'{what}: {path}')
    if not summary.n_episodes:
        print('retain-ros report: no valid episodes in the log(s)', file=sys.stderr)
        return 1
    return 0
