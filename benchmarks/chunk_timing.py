"""Chunk timing and real-time chunking, measured in simulated time (no ROS, deterministic).

The demo's finetuned tiny pi0 (α = 1) runs its own task in-distribution in the timing harness
(:mod:`retain_ros.demo.timing`): the sim arm behind a JTC-exact trajectory follower at 50 Hz, an
observation every ``replan_steps`` control periods, and an artificial inference delay of
simulated time between observation and publication. Cells:

- stamp policy, plain chunking, delay 0 / 100 / 200 ms: ``publish`` (the old node: stamp = now
  after inference, points from dt after it) vs ``observation`` (the new node: stamp = observation
  time, the controller skips passed points);
- blending, ``observation`` stamp, delay 100 / 200 / 300 ms: plain chunking vs RTC.

Figures per cell: success rate (95% Wilson interval), the largest and mean jump of the position
command at a chunk boundary (the update that picks up a new trajectory), the largest command
change at the other updates (for scale), and the mean absolute jerk of the measured joints.

    .venv/bin/python benchmarks/chunk_timing.py [--episodes 30] [--dir DEMO_DIR] [--results]

Trains nothing: it needs the cached demo checkpoints (``retain-ros demo-train``; ``--dir`` or
``$RETAIN_ROS_DEMO_DIR``). ``--results`` writes the ``## Chunk timing and RTC`` section of
benchmarks/RESULTS.md and the plot benchmarks/chunk_timing.png.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.results import write_section  # noqa: E402

SECTION = '## Chunk timing and RTC'
STAMP_DELAYS = (0.0, 0.1, 0.2)
RTC_DELAYS = (0.1, 0.2, 0.3)


def cells():
    """Return the (group, TimingConfig) pairs measured, without duplicates."""
    from retain_ros.demo.timing import TimingConfig
    out = []
    for delay in STAMP_DELAYS:
        for stamp in ('publish', 'observation'):
            out.append(TimingConfig(delay=delay, stamp_policy=stamp))
    for delay in RTC_DELAYS:
        for blending in ('none', 'rtc'):
            cfg = TimingConfig(delay=delay, blending=blending)
            if cfg not in out:
                out.append(cfg)
    return out


def measure(policy, episodes: int, progress=True):
    from tqdm import tqdm

    from retain_ros.demo.timing import evaluate_timing
    from retain_ros.demo.timing import summarize

    configs = cells()
    rows = {}
    with tqdm(total=len(configs) * episodes, desc='chunk timing', unit='episode',
              disable=not progress) as bar:
        for cfg in configs:
            t0 = time.perf_counter()
            results = evaluate_timing(policy, cfg, episodes, progress=bar.update)
            summary = summarize(results)
            summary['wall_s'] = time.perf_counter() - t0
            rows[cfg] = summary
    return rows


def _row(cfg, s) -> str:
    return (f'| {cfg.stamp_policy} | {cfg.blending} | {cfg.delay * 1e3:.0f} | '
            f'{s["successes"]}/{s["episodes"]} = {100 * s["success_rate"]:.0f}% '
            f'[{100 * s["success_lo"]:.0f}–{100 * s["success_hi"]:.0f}%] | '
            f'{s["max_boundary_jump"]:.3f} | {s["mean_boundary_jump"]:.3f} | '
            f'{s["max_inner_step"]:.3f} | {s["mean_abs_jerk"]:.0f} | {s["mean_time_s"]:.2f} |')


def table(rows) -> str:
    head = ('| stamp | blending | delay (ms) | success | max boundary jump (rad) | '
            'mean boundary jump (rad) | max other step (rad) | mean abs jerk (rad/s³) | '
            'mean episode time (s) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|')
    return head + '\n' + '\n'.join(_row(cfg, s) for cfg, s in rows.items())


def plot(rows, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    series = {
        'publish stamp (old)': lambda c: c.stamp_policy == 'publish',
        'observation stamp (new)': lambda c: c.stamp_policy == 'observation' and
        c.blending == 'none',
        'observation stamp + RTC': lambda c: c.blending == 'rtc',
    }
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for name, keep in series.items():
        pts = sorted((c.delay * 1e3, s) for c, s in rows.items() if keep(c))
        xs = [p[0] for p in pts]
        axes[0].errorbar(xs, [100 * p[1]['success_rate'] for p in pts],
                         yerr=[[100 * (p[1]['success_rate'] - p[1]['success_lo']) for p in pts],
                               [100 * (p[1]['success_hi'] - p[1]['success_rate']) for p in pts]],
                         marker='o', capsize=3, label=name)
        axes[1].plot(xs, [p[1]['max_boundary_jump'] for p in pts], marker='o', label=name)
        axes[2].plot(xs, [p[1]['mean_abs_jerk'] for p in pts], marker='o', label=name)
    axes[0].set_ylabel('success (%)')
    axes[1].set_ylabel('max command jump at a chunk boundary (rad)')
    axes[2].set_ylabel('mean |jerk| of the joints (rad/s³)')
    for ax in axes:
        ax.set_xlabel('inference delay (ms, simulated)')
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle('Demo tiny π0 (α = 1), new task in-distribution, JTC-exact controller')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--episodes', type=int, default=30)
    parser.add_argument('--dir', default=None, help='demo checkpoint directory')
    parser.add_argument('--results', action='store_true',
                        help='write the section of benchmarks/RESULTS.md and the plot')
    parser.add_argument('--no-progress', action='store_true')
    args = parser.parse_args(argv)

    import torch

    from retain_ros.demo.paths import demo_checkpoints
    from retain_ros.demo.rollout import load_pair

    torch.set_num_threads(1)
    generalist, finetuned = demo_checkpoints(create=False, root=args.dir)
    policy, _ = load_pair(generalist, finetuned, alpha=1.0)
    t0 = time.perf_counter()
    rows = measure(policy, args.episodes, progress=not args.no_progress)
    wall = time.perf_counter() - t0
    machine = f'{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}'
    text = (f'{SECTION}\n\n`.venv/bin/python benchmarks/chunk_timing.py --episodes '
            f'{args.episodes} --results` ({machine}; {wall:.0f} s wall; simulated time, so the '
            'figures do not depend on the machine).\n\n' + table(rows) + '\n')
    print(text)
    if args.results:
        write_section(text, SECTION)
        plot(rows, os.path.join(ROOT, 'benchmarks', 'chunk_timing.png'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
