"""``retain-ros report``: success rate per alpha and per split from episode logs.

Reads the JSON lines written by :class:`retain_ros.evaluation.episode_log.EpisodeLog`, groups
episodes by merge setting (the effective alpha of every parameter group; alpha = weight on the
FINETUNED model, 0 = pretrained, 1 = finetuned) and by split (``new_id``: the new task in its
training distribution, ``new_ood``: the new task under held-out variations, ``generalist``: the
pretraining tasks), and reports success rates with 95% Wilson intervals as a text table, a
markdown file and a plot. The steps live in their own modules: :mod:`.loading` (read and
validate the logs), :mod:`.summary` (count per setting and split), :mod:`.tables` (text and
markdown), :mod:`.plot` (the figure); this module runs them (:func:`write_report`) and is the CLI.

Function API (used by ``retain-ros demo``)::

    summary = write_report(['episodes.jsonl'], plot='success.png')
    print(format_table(summary))
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import List
from typing import Optional
from typing import Sequence
from typing import Union

from retain_ros.evaluation.loading import read_logs
from retain_ros.evaluation.plot import plot_summary
from retain_ros.evaluation.summary import CONVENTION
from retain_ros.evaluation.summary import summarize
from retain_ros.evaluation.summary import Summary
from retain_ros.evaluation.tables import format_markdown
from retain_ros.evaluation.tables import format_table
from retain_ros.evaluation.tables import format_task_table


def write_report(logs: Union[str, Sequence[str]], markdown: Optional[str] = None,
                 plot: Optional[str] = None, json_path: Optional[str] = None,
                 title: Optional[str] = None) -> Summary:
    """Load logs, summarize them and write the requested files (what ``retain-ros demo`` needs).

    :param logs: episode log path(s).
    :param markdown: markdown report path (links the plot relative to itself).
    :param plot: plot path (``.png``).
    :param json_path: summary JSON path.
    :param title: title of the plot and the markdown.
    :return: the :class:`Summary` (print it with :func:`format_table`).
    """
    paths = [logs] if isinstance(logs, (str, os.PathLike)) else list(logs)
    contents = read_logs(paths)
    summary = summarize(contents.episodes, skipped=contents.skipped,
                        sources=[str(p) for p in paths], aborted=contents.aborted,
                        sequential=contents.sequential, labels=contents.labels)
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
    """Return the argument parser of ``retain-ros report``."""
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
    """Run ``retain-ros report``.

    :param argv: the arguments after ``report`` (``None``: ``sys.argv``).
    :return: the exit status: 0, 1 when the logs hold no valid episode, 2 for a missing file.
    """
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
