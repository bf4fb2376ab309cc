"""The report's plot: success rate vs alpha, one line per split, with 95% Wilson intervals."""
from __future__ import annotations

import os
from typing import List
from typing import Optional
from typing import Tuple

from retain_ros.evaluation.loading import UNKNOWN_SPLIT
from retain_ros.evaluation.summary import SPLIT_NAMES
from retain_ros.evaluation.summary import Summary

#: colour and marker of each known split (others get fallback colours and a diamond)
SPLIT_COLORS = {'new_id': '#1f77b4', 'new_ood': '#d62728', 'generalist': '#2ca02c'}
SPLIT_MARKERS = {'new_id': 'o', 'new_ood': 's', 'generalist': '^'}


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

    :param summary: from :func:`~retain_ros.evaluation.summary.summarize`.
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
