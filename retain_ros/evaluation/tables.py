"""Text of a report: the plain-text tables ``retain-ros report`` prints and the markdown file.

Each cell reads ``k/n rate [95% Wilson interval]``; the highest observed rate per split is named
with its ties, and the text says that overlapping intervals do not separate settings.
"""
from __future__ import annotations

from typing import List
from typing import Optional

from retain_ros.evaluation.summary import Cell
from retain_ros.evaluation.summary import CONVENTION
from retain_ros.evaluation.summary import SPLIT_NAMES
from retain_ros.evaluation.summary import SPLIT_SHORT
from retain_ros.evaluation.summary import Summary


def _split_title(split: str) -> str:
    return SPLIT_SHORT.get(split, split)


def _cell_text(cell: Cell) -> str:
    if not cell.n:
        return '-'
    low, high = cell.interval
    return (f'{cell.k:>3d}/{cell.n:<3d}{100 * cell.rate:>4.0f}%  '
            f'[{100 * low:>3.0f}-{100 * high:>3.0f}%]')


def sequential_lines(summary: Summary) -> List[str]:
    """Return the sequential test's decisions, each with its error rate (empty without one).

    A decision reads ``alpha=0.5 better than alpha=1 (anytime-valid p = 0.012 ≤ 0.05, Holm over
    2 comparisons)``; blind labels are followed by their setting. Comparisons not decided say
    so; no setting is ever named a winner without a test behind it.
    """
    status = summary.sequential
    if not isinstance(status, dict) or not isinstance(status.get('comparisons'), list):
        return []
    design = status.get('design') or {}
    level = design.get('level', 0.05)
    count = design.get('comparisons', len(status['comparisons']))
    holm = f'Holm over {count} comparison{"s" if count != 1 else ""}'
    lines = [f'Sequential comparison (family-wise level {level:g}, {holm}; p-values valid at '
             f'any stopping time within the budget of {design.get("budget", "?")} episodes '
             'per setting):']
    for comp in status['comparisons']:
        if not isinstance(comp, dict):
            continue
        a, b = summary.unblind(str(comp.get('a'))), summary.unblind(str(comp.get('b')))
        p_value = float(comp.get('p_value', 1.0))
        decision = comp.get('decision')
        if decision in ('a better', 'b better'):
            win, lose = (a, b) if decision == 'a better' else (b, a)
            lines.append(f'  {win} better than {lose} (anytime-valid p = {p_value:.3g} '
                         f'≤ {level:g}, {holm})')
        else:
            why = 'no difference within budget' if decision == 'no difference within budget' \
                else 'not decided' + (f' ({comp["note"]})' if comp.get('note') else '')
            lines.append(f'  {a} vs {b}: {why} (p = {p_value:.3g} > {level:g}, '
                         f'{comp.get("pairs", 0)} pairs)')
    stopped = status.get('stopped')
    dropped = ', '.join(summary.unblind(str(d)) for d in status.get('dropped') or [])
    lines.append('  ' + (f'stopped: {stopped}' if stopped else 'still running') + ' after '
                 f'{status.get("episodes_done", "?")} episodes'
                 + (f'; settings dropped: {dropped}' if dropped else ''))
    if status.get('mixed_tag_blocks'):
        lines.append(f'  note: {status["mixed_tag_blocks"]} block(s) mixed scene tags')
    return lines


def _header_lines(summary: Summary) -> List[str]:
    lines = [f'Success rate per merge setting ({CONVENTION})',
             f'95% Wilson intervals; {summary.n_episodes} episode(s)'
             + (f' from {", ".join(summary.sources)}' if summary.sources else '')]
    if summary.skipped:
        lines.append(f'WARNING: {summary.skipped} malformed line(s) skipped')
    if summary.aborted:
        lines.append(f'{summary.aborted} aborted episode(s) not counted')
    return lines


def _text_table(headers: List[str], rows: List[List[str]]) -> List[str]:
    """Lay out columns padded to their widest cell: header, ``-+-`` rule, rows."""
    widths = [max(len(r[i]) for r in [headers] + rows) for i in range(len(headers))]

    def fmt(row):
        return ' | '.join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
    return [fmt(headers), '-+-'.join('-' * w for w in widths)] + [fmt(r) for r in rows]


def format_table(summary: Summary) -> str:
    """Return the plain-text table: one row per setting, one ``k/n rate [low-high]`` per split."""
    lines = _header_lines(summary)
    if not summary.n_episodes:
        return '\n'.join(lines + ['', 'no episodes'])
    headers = ['setting'] + [_split_title(s) for s in summary.splits]
    rows = [[summary.label(st)] + [_cell_text(summary.cell(st, sp)) for sp in summary.splits]
            for st in summary.settings]
    lines += [''] + _text_table(headers, rows)
    lines += ['', 'cells: successes/episodes  rate  [95% Wilson interval]']
    lines += [f'  {_split_title(s)} = {SPLIT_NAMES[s]}' for s in summary.splits
              if s in SPLIT_NAMES]
    lines.append('highest observed rate: ' + '; '.join(
        f'{_split_title(s)}: {summary.leaders_text(s)}' for s in summary.splits))
    lines.append('  (overlapping intervals mean the data do not separate those settings)')
    seq = sequential_lines(summary)
    if seq:
        lines += [''] + seq
    return '\n'.join(lines)


def format_task_table(summary: Summary) -> str:
    """Return the plain-text table per task: one row per setting, one column per (split, task)."""
    columns = [(sp, t) for sp in summary.splits for t in summary.tasks(sp)]
    if not columns:
        return 'no episodes'
    headers = ['setting'] + [f'{_split_title(sp)}: {t}' for sp, t in columns]
    rows = [[summary.label(st)] + [_cell_text(summary.task_cell(st, sp, t)).strip()
                                   for sp, t in columns]
            for st in summary.settings]
    lines = ['Success rate per task (k/n rate [95% Wilson interval])', '']
    return '\n'.join(lines + _text_table(headers, rows))


def format_markdown(summary: Summary, plot_path: Optional[str] = None,
                    title: str = 'Evaluation rollouts: success rate per alpha') -> str:
    """Return the markdown report: header, table (with intervals), per-split leaders, plot link.

    :param summary: from :func:`~retain_ros.evaluation.summary.summarize`.
    :param plot_path: the plot's path as the markdown should link it (``None``: no plot).
    :param title: the ``#`` heading.
    :return: the markdown text.
    """
    out = [f'# {title}', '']
    out += [f'- Convention: {CONVENTION} (θ = (1 − α)·θ_pre + α·θ_ft).',
            f'- Episodes: {summary.n_episodes}'
            + (f' from {", ".join(f"`{s}`" for s in summary.sources)}' if summary.sources
               else '') + '.',
            '- Cells: successes / episodes, success rate, 95% Wilson interval.']
    if summary.skipped:
        out.append(f'- **{summary.skipped} malformed log line(s) skipped.**')
    if summary.aborted:
        out.append(f'- {summary.aborted} aborted episode(s) not counted.')
    seq = sequential_lines(summary)
    if seq:
        out += ['', seq[0]] + [f'- {line.strip()}' for line in seq[1:]]
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
