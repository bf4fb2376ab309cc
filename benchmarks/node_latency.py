"""Latency of the retain_policy node: camera message published -> action chunk received.

For 1-3 cameras at 224x224 (rgb8), the tiny pi0 on CPU: the round trips of
:func:`retain_ros.ros.tools.node_latency.run` (that module says what ``model``, ``wait``,
``overhead``, ``inbound``, ``convert``, ``observe``, ``post`` and ``outbound`` measure), p50 /
p99 per camera count. Node and publisher share one process, transport is Fast DDS on loopback.

    .venv/bin/python benchmarks/node_latency.py [--samples 60] [--cameras 1 2 3] [--results]
        [--before DIR]
    .venv/bin/python benchmarks/node_latency.py --recording [--cameras 1 3] [--repeat 2]
        [--results]
    (--threads N sets torch's threads; default torch's own, as the node runs)

Every row also measures the transport floor (:mod:`retain_ros.ros.tools.transport_floor`: the
same messages echoed by a bare node, no policy node; in this process and from a child process)
and ``node's own`` = overhead - floor.
``--before DIR`` interleaves, per camera count, the benchmark of another checkout (e.g. ``git
archive HEAD | tar -x -C DIR``: the code before a change) in a subprocess, for a before / after
table from one run.

``--results`` writes the table into the ``## Node latency`` section of benchmarks/RESULTS.md
(replacing that section only). ``--recording`` measures the same round trips with the node's
``record`` parameter off, on (images as received) and on with JPEG re-encoding, an episode
running throughout, in the same run (ratios against the run without recording), with the bag's
size and dropped-frame count; ``--results`` then writes the ``## Recording`` section.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import re
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(101, 200)))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')

from benchmarks.results import write_section  # noqa: E402
from retain_ros.ros.tools.node_latency import run  # noqa: E402
from retain_ros.ros.tools.node_latency import SIDE  # noqa: E402
from retain_ros.ros.tools.transport_floor import run_floor  # noqa: E402

SECTION = '## Node latency'
RECORDING_SECTION = '## Recording'


def summarize(rows, extra):
    """Return p50 / p99 of every timing; ``no_chunk``: the samples without a chunk, as a cell."""
    out = {}
    for key in rows[0]:
        values = np.array([r[key] for r in rows])
        out[key] = (float(np.percentile(values, 50)), float(np.percentile(values, 99)))
    out['no_chunk'] = f'{extra["missed"]} ({extra["late"]} late)'
    return out


def table(results, samples: int) -> str:
    lines = [
        f'Tiny pi0 (random weights, 64 px model input) on CPU, {SIDE}x{SIDE} rgb8 cameras, '
        f'{samples} samples per row; p50 / p99 in ms. Overhead = end-to-end - model - timer '
        'wait (publish, DDS loopback both ways, deserialization, image conversion, reading the '
        'observation, safety, message build). Node and publisher in one process. "no chunk": '
        'samples whose chunk never came, left out of the percentiles: "late" = the node '
        'dropped the chunk because inference outlasted its 0.2 s of actions; the others went '
        'stale (60 ms) before the inference timer picked them up, or lost a best-effort '
        'message.',
        '',
        '| cameras | end-to-end | model (predict) | timer wait | overhead | overhead / model '
        '(p50) | of which: inbound | convert | observe | post | outbound | no chunk |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for cams, s in results.items():
        ratio = s['overhead'][0] / s['model'][0] * 100
        lines.append(
            f'| {cams} | {s["e2e"][0]:.1f} / {s["e2e"][1]:.1f} | {s["model"][0]:.1f} / '
            f'{s["model"][1]:.1f} | {s["wait"][0]:.1f} / {s["wait"][1]:.1f} | '
            f'{s["overhead"][0]:.2f} / {s["overhead"][1]:.2f} | {ratio:.0f}% | '
            f'{s["inbound"][0]:.2f} | {s["convert"][0]:.2f} | {s["observe"][0]:.2f} | '
            f'{s["post"][0]:.2f} | {s["outbound"][0]:.2f} | {s["no_chunk"]} |')
    return '\n'.join(lines)


def before(tree: str, cams: int, samples: int):
    """Run ``tree``'s own benchmark for ``cams`` cameras; its overhead and model p50 / p99 (ms)."""
    proc = subprocess.run([sys.executable, os.path.join(tree, 'benchmarks', 'node_latency.py'),
                           '--samples', str(samples), '--cameras', str(cams)], cwd=tree,
                          capture_output=True, text=True, timeout=600)
    found = re.search(r'\| %d \| [^|]+\| ([\d.]+) / ([\d.]+) \| [^|]+\| ([\d.]+) / ([\d.]+) \|'
                      % cams, proc.stdout)
    if proc.returncode or not found:
        raise RuntimeError(f'the benchmark in {tree} failed ({proc.returncode}): '
                           f'{proc.stdout[-1000:]}{proc.stderr[-2000:]}')
    model = (float(found.group(1)), float(found.group(2)))
    return {'overhead': (float(found.group(3)), float(found.group(4))), 'model': model}


def load_average() -> str:
    """Return the 1-minute load average now, as text."""
    return f'{os.getloadavg()[0]:.2f}'


def overhead_table(results, samples: int, old: str) -> str:
    """Before / after / floor table of the node's overhead against the issue's targets."""
    lines = [
        f'{samples} samples per row and per measurement, rows interleaved per camera count in '
        'one run (before, after, floor). Overhead = end-to-end - model - timer wait, p50 / p99 '
        'ms. **Floor** = the same messages echoed by a bare rclpy node with no policy '
        '(publish calls, DDS loopback both ways, rclpy deserialization, two executors): what '
        'the transport costs, not the node; **floor, other process** = the same with the echo '
        'node in a child process (as a camera driver / controller would be: no shared GIL, DDS '
        'across processes). **Node\'s own** = overhead - floor (p50). Target: '
        'overhead <= 1 ms p50 and <= 3 ms p99.' + (f' Before = `{old}`.' if old else ''),
        '',
        '| cameras | before: overhead | after: overhead | transport floor | floor, other '
        'process | node\'s own (p50, after) | after: inbound | convert | observe | post | '
        'outbound | model p50 (before / after) | load avg (1 min) |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for cams, s in results.items():
        b = s.get('before')
        old_cell = f'{b["overhead"][0]:.2f} / {b["overhead"][1]:.2f}' if b else '-'
        old_model = f'{b["model"][0]:.1f}' if b else '-'
        lines.append(
            f'| {cams} | {old_cell} | {s["overhead"][0]:.2f} / {s["overhead"][1]:.2f} | '
            f'{s["floor"][0]:.2f} / {s["floor"][1]:.2f} | '
            f'{s["floor_process"][0]:.2f} / {s["floor_process"][1]:.2f} | '
            f'{s["overhead"][0] - s["floor"][0]:.2f} | {s["inbound"][0]:.2f} | '
            f'{s["convert"][0]:.2f} | {s["observe"][0]:.2f} | {s["post"][0]:.2f} | '
            f'{s["outbound"][0]:.2f} | '
            f'{old_model} / {s["model"][0]:.1f} | {s["load"]} |')
    return '\n'.join(lines)


MODES = (('off', None), ('on (as received)', 'raw'), ('on (JPEG q90)', 'jpeg'))


def bag_size(rec, cameras: int) -> str:
    """Bag columns: MiB, episode s, MiB per s per camera, KiB per camera frame, counts."""
    per_frame = rec['bag_mib'] * 1024 / rec['frames'] if rec['frames'] else float('nan')
    return (f'{rec["bag_mib"]:.2f} | {rec["seconds"]:.1f} | '
            f'{rec["bag_mib"] / rec["seconds"] / cameras:.3f} | {per_frame:.0f} | '
            f'{rec["frames"]} / {rec["messages"]} | {rec["dropped"]}')


def recording_table(cameras, samples: int, machine: str) -> str:
    """Step latency with and without recording, same run; bag size and drops."""
    lines = [
        f'`.venv/bin/python benchmarks/node_latency.py --recording --results` on {machine}. '
        f'Same round trip as "Node latency" ({SIDE}x{SIDE} rgb8 cameras of uniform random '
        f'noise, tiny pi0, {samples} samples per row, p50 / p99 ms); "recording on" = the '
        'node\'s `record` parameter with an episode running for the whole row (the bag holds '
        'every camera frame, joint state, chunk, `~/merge_state` and `/diagnostics` message of '
        'the row). Ratios are against the row without recording of the same camera count, '
        'measured in the same run. Camera frames arrive at the benchmark\'s sample rate '
        '(one per camera per sample, 0.17-0.22 s apart), so MiB / s / camera is at that '
        'rate; KiB per camera '
        'frame (bag size / camera frames, everything else included) is what scales to a real '
        'camera rate. Noise images are the worst case for zstd and JPEG. "no chunk" as in '
        '"Node latency"; "dropped": frames the recorder dropped.',
        '',
        '| cameras | recording | end-to-end | model (predict) | overhead | overhead vs off '
        '(p50) | e2e vs off (p50) | no chunk | bag MiB | episode s | MiB / s / camera | '
        'KiB / camera frame | camera frames / messages | dropped |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for cams in cameras:
        base = None
        for label, mode in MODES:
            rows, extra = run(cams, samples, record=mode)
            rec = extra['recording']
            s = summarize(rows, extra)
            base = base or s
            print(f'{cams} camera(s), recording {label}: e2e p50 {s["e2e"][0]:.1f} ms, '
                  f'overhead p50 {s["overhead"][0]:.2f} ms' +
                  (f', bag {rec["bag_mib"]:.1f} MiB, dropped {rec["dropped"]}' if rec else ''),
                  flush=True)
            size = bag_size(rec, cams) if rec else '- | - | - | - | - | -'
            lines.append(
                f'| {cams} | {label} | {s["e2e"][0]:.1f} / {s["e2e"][1]:.1f} | '
                f'{s["model"][0]:.1f} / {s["model"][1]:.1f} | '
                f'{s["overhead"][0]:.2f} / {s["overhead"][1]:.2f} | '
                f'{s["overhead"][0] - base["overhead"][0]:+.2f} ms | '
                f'{s["e2e"][0] / base["e2e"][0]:.2f}x | {s["no_chunk"]} | {size} |')
    return '\n'.join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--samples', type=int, default=60)
    parser.add_argument('--cameras', type=int, nargs='+', default=None)
    parser.add_argument('--recording', action='store_true',
                        help='with / without the record parameter (the Recording section)')
    parser.add_argument('--results', action='store_true',
                        help='write the section of benchmarks/RESULTS.md')
    parser.add_argument('--repeat', type=int, default=1,
                        help='--recording: run the whole comparison this many times (spread)')
    parser.add_argument('--before', default='',
                        help='another checkout whose benchmark runs interleaved (before rows)')
    parser.add_argument('--threads', type=int, default=None,
                        help="torch threads (default: torch's own, as the node runs)")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    machine = (f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, '
               f'torch {torch.__version__}, {torch.get_num_threads()} torch threads, '
               f'RMW {os.environ.get("RMW_IMPLEMENTATION", "default (Fast DDS)")}')
    if args.recording:
        runs = [recording_table(args.cameras or [1, 3], args.samples, machine)
                for _ in range(args.repeat)]
        text = f'{RECORDING_SECTION}\n\n' + '\n\n'.join(
            (f'Run {i + 1} of {len(runs)}:\n\n' if len(runs) > 1 else '') + table
            for i, table in enumerate(runs))
        print(text)
        if args.results:
            write_section(text, RECORDING_SECTION)
        return 0
    args.cameras = args.cameras or [1, 2, 3]

    results = {}
    for cams in args.cameras:
        load = [load_average()]
        old = before(args.before, cams, args.samples) if args.before else None
        rows, extra = run(cams, args.samples)
        results[cams] = summarize(rows, extra)
        s = results[cams]
        for key, separate in (('floor', False), ('floor_process', True)):
            floor = run_floor(cams, args.samples, extra['points'], separate_process=separate)
            s[key] = (float(np.percentile(floor, 50)), float(np.percentile(floor, 99)))
        s['before'] = old
        s['load'] = '-'.join(load + [load_average()])
        print(f'{cams} camera(s): e2e p50 {s["e2e"][0]:.1f} ms, model p50 {s["model"][0]:.1f} ms, '
              f'overhead p50 {s["overhead"][0]:.2f} ms p99 {s["overhead"][1]:.2f} ms, floor p50 '
              f'{s["floor"][0]:.2f} ms p99 {s["floor"][1]:.2f} ms (echo in another process '
              f'{s["floor_process"][0]:.2f} / {s["floor_process"][1]:.2f})' +
              (f', before p50 {old["overhead"][0]:.2f} ms p99 {old["overhead"][1]:.2f} ms'
               if old else ''), flush=True)
    flag = f' --before {args.before}' if args.before else ''
    text = (f'{SECTION}\n\n`.venv/bin/python benchmarks/node_latency.py --results{flag}` on '
            f'{machine}.\n\n' + overhead_table(results, args.samples, args.before)
            + '\n\nThe same run, every timing:\n\n' + table(results, args.samples))
    print(text)
    if args.results:
        write_section(text, SECTION)
    return 0


if __name__ == '__main__':
    sys.exit(main())
