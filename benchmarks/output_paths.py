"""The shipped demo policy closed loop through different controller interfaces (embodiments).

Runs ``retain-ros demo`` once per embodiment, on the same held-out scenes (seeds 0..N-1), the
same alpha settings and the same episode order, and compares success per setting and split:

- ``joints``: JointTrajectory chunks to the sim's trajectory controller (the baseline, as in the
  README's demo table);
- ``sim_velocity``: every control period the velocity ``(q_k - q_{k-1}) / dt`` to the sim's
  forward velocity controller;
- ``sim_joint_command``: every control period a ``sensor_msgs/JointState`` position command.

Usage::

    .venv/bin/python benchmarks/output_paths.py [--episodes 10] [--alphas 0,0.5,1] [--results]

``--results`` writes the table into the ``## Demo through several controller interfaces``
section of benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from typing import Dict
from typing import List
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.results import write_section  # noqa: E402
from retain_ros.evaluation.loading import load_episodes  # noqa: E402
from retain_ros.evaluation.summary import summarize  # noqa: E402

SECTION = '## Demo through several controller interfaces'
PATHS = ('joints', 'sim_velocity', 'sim_joint_command')


def run_path(embodiment: str, out: str, episodes: int, alphas: str) -> Dict[str, object]:
    """One ``retain-ros demo`` run through ``embodiment``; its summary and wall time."""
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               ROS_DOMAIN_ID=str(random.randint(101, 200)), PYTHONUNBUFFERED='1')
    cmd = [sys.executable, '-m', 'retain_ros.cli', 'demo', '--out', out,
           '--embodiment', embodiment, '--episodes', str(episodes), '--alphas', alphas,
           '--language-only', '-1', '--group-settings', '']
    t0 = time.monotonic()
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if result.returncode != 0:
        raise RuntimeError(f'demo through {embodiment} failed:\n{result.stdout[-2000:]}\n'
                           f'{result.stderr[-2000:]}')
    records, skipped = load_episodes(os.path.join(out, 'episodes.jsonl'))
    return {'summary': summarize(records, skipped), 'wall': wall}


def table(runs: Dict[str, Dict[str, object]]) -> str:
    """Markdown: one row per setting and split, one column per embodiment (k/n [95% Wilson])."""
    base = runs[PATHS[0]]['summary']
    lines = ['| setting | split | ' + ' | '.join(f'`{p}`' for p in runs) + ' |',
             '|---|---|' + '---:|' * len(runs)]
    for setting in base.settings:
        for split in base.splits:
            cells = []
            for run in runs.values():
                summary = run['summary']
                match = [s for s in summary.settings if s.values == setting.values]
                cell = summary.cell(match[0], split) if match else None
                if cell is None or not cell.n:
                    cells.append('—')
                    continue
                low, high = cell.interval
                cells.append(f'{cell.k}/{cell.n} [{low:.0%}–{high:.0%}]')
            lines.append(f'| {base.label(setting)} | {split} | ' + ' | '.join(cells) + ' |')
    lines.append('| wall time | | ' + ' | '.join(f'{r["wall"]:.0f} s' for r in runs.values())
                 + ' |')
    return '\n'.join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--episodes', type=int, default=10, help='per setting and split')
    p.add_argument('--alphas', default='0,0.5,1')
    p.add_argument('--paths', default=','.join(PATHS), help='embodiments, comma-separated')
    p.add_argument('--out', default='', help='keep the demo outputs here')
    p.add_argument('--results', action='store_true',
                   help=f'write the table into the "{SECTION}" section of RESULTS.md')
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix='retain_output_paths_')
    runs = {}
    for path in args.paths.split(','):
        print(f'[output_paths] {path}: {args.episodes} episodes per setting and split ...',
              flush=True)
        runs[path] = run_path(path, os.path.join(out, path), args.episodes, args.alphas)
    text = table(runs)
    print(text)
    if args.results:
        write_section(
            f'{SECTION}\n\n`.venv/bin/python benchmarks/output_paths.py --episodes '
            f'{args.episodes} --alphas {args.alphas} --results` (the shipped generalist and '
            'its 48-demo finetune, held-out seeds 0..N-1, the same scenes and episode order '
            'for every interface; k/n successes with 95% Wilson intervals):\n\n' + text + '\n',
            SECTION)
        print(f'wrote the "{SECTION}" section of benchmarks/RESULTS.md')
    return 0


if __name__ == '__main__':
    sys.exit(main())
