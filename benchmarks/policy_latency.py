"""Per-family inference latency, eager vs compiled: π0, π0.5 and SmolVLA ``predict``.

No ROS: the policy alone (pre-processing, the flow-matching sampler, unnormalize), the part of the
node's step that ``benchmarks/node_latency.py`` reports as ``model``. Every camera gets the same
raw ``--image-side`` square rgb8 image (each family resizes it to its model input), the state is
the checkpoint's typical state, the prompt is fixed.

One row per (size, family, cameras, ``compile`` mode); the policies of one row group are built
with the same weights (the fixture's, or random weights of seed 1) and the same sampler noise, so
a compiled chunk must equal the eager one within rounding (the table gives the largest
difference). Per row: the first ``predict`` (for a compiled mode: the compile, as the node's
warm-up at configure) is timed apart, ``--warmup`` more untimed calls follow, then the timed
calls: ``--samples`` (tiny) or ``--samples-large`` (mid / full) per row, interleaved over
``--rounds`` rounds across all rows of the group (a slow phase of a shared machine hits every
row). torch's compile counters are read around the timed calls: they must not move (no
recompilation in steady state). Ratios: each row's p50 over the eager row's of the same group.

Sizes (:mod:`policy_builds`): ``tiny`` (the test-size models, CPU float32), ``mid`` (a few hundred
million parameters, random weights) and ``full`` (the families' real sizes, random weights; needs
a GPU unless ``--dry-run``). ``mid`` / ``full`` run in bfloat16 on a GPU or on a CPU with native
bfloat16 matrix instructions (``cpu_has_native_bf16``), else in float32. ``tiny`` and ``mid``
are one group each (all their rows interleaved); ``full`` is one group per (cameras, family),
1 camera first, so that a ``--deadline-s`` cut keeps the most useful rows.

    .venv/bin/python benchmarks/policy_latency.py [--size tiny mid] [--compile none default]
        [--cameras 1] [--threads 2] [--results]
    .venv/bin/python benchmarks/policy_latency.py --size full --dry-run   # parameter counts only
    benchmarks/gpu_compile_latency.sh                                      # the GPU run

``--results`` writes the ``## Per-family inference latency`` section of benchmarks/RESULTS.md
(replacing that section only); ``--out FILE`` writes the same text to FILE after every group.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from typing import List

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (ROOT, HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from benchmarks.policy_builds import build_policy  # noqa: E402
from benchmarks.policy_builds import FAMILIES  # noqa: E402
from benchmarks.policy_builds import SIZES  # noqa: E402
from benchmarks.results import write_section  # noqa: E402

SECTION = '## Per-family inference latency'
LABELS = {'pi0': 'π0', 'pi05': 'π0.5', 'smolvla': 'SmolVLA'}
MODES = ('none', 'default', 'reduce-overhead', 'max-autotune')
INSTRUCTION = 'put the gripper on the red block'
PUBLISHED = (
    'Published figures for reference (as cited in issue 24; other hardware and code, not '
    'measured here): openpi π0 ≈73-75 ms per chunk eager on an RTX 4090; GR00T N1.7 156 ms '
    'eager -> 72 ms with `torch.compile` on an H100.')


def pick_dtype(size: str, device: str, dtype: str) -> str:
    """Return the dtype a row runs in: ``--dtype``, else float32 (tiny) / the device's best."""
    if dtype != 'auto':
        return dtype
    if size == 'tiny':
        return 'float32'
    from retain_ros.merging.devices import cpu_has_native_bf16

    return 'bfloat16' if device.startswith('cuda') or cpu_has_native_bf16() else 'float32'


def observation(policy, side: int):
    """Return one observation: a fixed random ``side`` x ``side`` rgb8 image per camera."""
    from retain_ros.policies.base import Observation

    rng = np.random.default_rng(0)
    images = {name: rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
              for name in policy.camera_names}
    typical = getattr(getattr(policy, 'stats', None), 'typical_state', None)
    state = np.asarray(typical(), np.float64) if typical else np.zeros(policy.state_dim)
    return Observation(images=images, instruction=INSTRUCTION, state=state)


def prepare(row: dict, policy, args) -> None:
    """Compile (``row['mode']``), time the first call, run the warm-up; fill ``row``."""
    from retain_ros.policies.compile import apply_compile

    apply_compile(policy, row['mode'])
    row['obs'] = obs = observation(policy, args.image_side)
    t0 = time.perf_counter()
    chunk = policy.predict(obs)
    row['first_s'] = time.perf_counter() - t0
    for _ in range(args.warmup):
        chunk = policy.predict(obs)
    if not np.all(np.isfinite(chunk.actions)):
        raise RuntimeError(f'{policy.name} {row["mode"]}: non-finite actions')
    row.update(chunk=np.array(chunk.actions), times=[],
               params=sum(p.numel() for p in policy.module.parameters()))


def measure(group: List[dict], policies: list, samples: int, rounds: int) -> None:
    """Time ``samples`` ``predict`` calls per row, interleaved over ``rounds`` rounds.

    Also record the compile counters' change over the timed calls (``new_graphs``).
    """
    from retain_ros.policies.compile import compile_counts

    before = compile_counts()
    per_round = [samples // rounds + (r < samples % rounds) for r in range(rounds)]
    for count in per_round:
        for row, policy in zip(group, policies):
            for _ in range(count):
                t0 = time.perf_counter()
                policy.predict(row['obs'])
                row['times'].append((time.perf_counter() - t0) * 1e3)
    after = compile_counts()
    for row in group:
        row['new_graphs'] = after['unique_graphs'] - before['unique_graphs']
        row['p50'], row['p99'] = (float(np.percentile(row['times'], q)) for q in (50, 99))


def run_group(group: List[dict], work: str, args) -> None:
    """Build, compile and time one group of rows (a row that fails carries its reason)."""
    import torch

    built = []
    for row in group:   # every model built before any compile: see the note below
        try:
            t0 = time.perf_counter()
            built.append((row, build_policy(row['size'], row['family'], work, row['cameras'],
                                            row['device'], row['dtype'], args.smolvla_vlm)))
            row['build_s'] = time.perf_counter() - t0
        except (FileNotFoundError, ValueError, RuntimeError) as exc:
            fail(row, exc)
    # eager first calls before any compile: the first run of a transformers model class grows
    # transformers' output-capturing registry, and dynamo guards on its length, so a model
    # class first run after a compile makes the compiled graphs recompile once
    policies, kept = [], []
    for row, policy in sorted(built, key=lambda item: item[0]['mode'] != 'none'):
        try:
            prepare(row, policy, args)
        except (ValueError, RuntimeError) as exc:
            fail(row, exc)
            continue
        print(f'{label(row)}: built in {row["build_s"]:.1f} s, first call '
              f'{row["first_s"]:.1f} s', flush=True)
        policies.append(policy)
        kept.append(row)
    samples = args.samples if group[0]['size'] == 'tiny' else args.samples_large
    # no inference_mode around the calls: the node calls predict as is (its own no_grad), and
    # a grad-mode switch between the warm-up and the timed calls would make dynamo recompile
    measure(kept, policies, samples, min(args.rounds, samples))
    eager = {(r['family'], r['cameras']): r for r in kept if r['mode'] == 'none'}
    for row in kept:
        base = eager.get((row['family'], row['cameras']))
        if base is not None:
            row['ratio'] = row['p50'] / base['p50']
            row['diff'] = float(np.max(np.abs(row['chunk'] - base['chunk'])))
        print(f'{label(row)}: p50 {row["p50"]:.1f} ms p99 {row["p99"]:.1f} ms '
              f'({len(row["times"])} calls)', flush=True)
    del policies
    if any(r['device'].startswith('cuda') for r in group):
        torch.cuda.empty_cache()


def fail(row: dict, exc: Exception) -> None:
    row['error'] = f'{type(exc).__name__}: {exc}'.replace('|', '/').splitlines()[0]
    print(f'{label(row)}: not run: {row["error"]}', flush=True)


def label(row: dict) -> str:
    return f'{row["size"]} {row["family"]} {row["cameras"]} cam {row["mode"]}'


def plan_groups(args) -> List[List[dict]]:
    """Return the rows to run, grouped as the module docstring says."""
    groups = []
    for size in args.size:
        device = args.device if args.device != 'auto' else ('cuda' if size == 'full' else 'cpu')
        dtype = pick_dtype(size, device, args.dtype)
        per_key = [[{'size': size, 'family': f, 'cameras': c, 'mode': m, 'device': device,
                     'dtype': dtype}
                    for m in (args.compile if c in (args.compile_cameras or [c]) else ['none'])]
                   for c in args.cameras for f in args.families]
        groups += per_key if size == 'full' else [[r for rows in per_key for r in rows]]
    return groups


def dry_run(groups: List[List[dict]], work: str, args) -> None:
    """Print each planned row with its parameter count (modules on the meta device)."""
    counts = {}
    for row in (r for g in groups for r in g):
        key = (row['size'], row['family'], row['cameras'])
        if key not in counts:
            module = build_policy(*key[:2], work, key[2], 'meta', row['dtype'],
                                  args.smolvla_vlm, meta=True)
            counts[key] = sum(p.numel() for p in module.parameters())
        print(f'{label(row)}: {counts[key] / 1e6:.1f} M parameters, {row["dtype"]} on '
              f'{row["device"]} (dry run: nothing built)', flush=True)


def table(rows: List[dict], args) -> str:
    """Return the markdown table of ``rows``."""
    lines = ['| size | family | cameras | parameters | dtype | compile | first call (s) | '
             'predict p50 / p99 (ms) | vs eager (p50) | max abs diff vs eager | graphs '
             'compiled while timed (group) |', '|---|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        head = f'| {r["size"]} | {LABELS[r["family"]]} | {r["cameras"]} |'
        if 'p50' not in r:
            why = r.get('error', 'not run: the --deadline-s or time limit was reached')
            lines.append(f'{head} | {r["dtype"]} | {r["mode"]} | {why} | | | | |')
            continue
        ratio = f'{r["ratio"]:.2f}x' if 'ratio' in r else 'no eager row'
        diff = f'{r["diff"]:.1e}' if 'diff' in r and r['mode'] != 'none' else '-'
        lines.append(f'{head} {r["params"] / 1e6:.1f} M | {r["dtype"]} | {r["mode"]} | '
                     f'{r["first_s"]:.2f} | {r["p50"]:.1f} / {r["p99"]:.1f} | {ratio} | {diff} '
                     f'| {r["new_graphs"]} |')
    return '\n'.join(lines)


def machine_line(args) -> str:
    """Return the machine, torch version and threads, for the report."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as fh:
            cpu = next((ln.split(':', 1)[1].strip() for ln in fh if ln.startswith('model name')),
                       cpu)
    except OSError:
        pass
    gpu = (f', {torch.cuda.get_device_name(0)}' if any(s == 'full' for s in args.size)
           and torch.cuda.is_available() else '')
    return (f'{cpu}, {os.cpu_count()} CPU cores (shared){gpu}, torch {torch.__version__}, '
            f'{torch.get_num_threads()} torch thread(s)')


def report(rows: List[dict], args, loads) -> str:
    """Return the RESULTS.md section."""
    argv = ' '.join(sys.argv[1:]) if args.command is None else args.command
    return '\n'.join([
        SECTION, '',
        f'`.venv/bin/python benchmarks/policy_latency.py {argv}` on {machine_line(args)}; '
        f'`uptime` load average (1 / 5 / 15 min) {loads[0]} at the start, {loads[1]} at the '
        'end. Policy alone (no ROS): eager (`compile=none`) vs compiled rows of the same '
        'weights and noise, timed interleaved in one process (see the script\'s docstring); '
        f'{args.image_side}x{args.image_side} rgb8 camera images; "first call" = the '
        'compile for a compiled mode (the node does it in its warm-up at configure); '
        '"vs eager" = p50 / the eager p50 of the same family, size and cameras; "graphs '
        'compiled while timed" must be 0. Sizes: tiny = the test-size models (π0: the '
        'project\'s tiny π0; π0.5 / SmolVLA: the LeRobot 0.4.4 fixtures); mid = random-weight '
        'models of the real layouts, narrower (π0 / π0.5: SigLIP-B/14 224 px + 12-layer Gemma '
        '1024 wide + 12-layer expert 512 wide; SmolVLA: SmolVLM2-500M widths, 16 VLM layers, '
        '256 px), chunk 50, 10 flow steps; full = the families\' real sizes '
        '(`benchmarks/policy_builds.py`).', '',
        table(rows, args), '', PUBLISHED])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', nargs='+', choices=SIZES, default=['tiny', 'mid'],
                        help='tiny: CPU float32 test-size models; mid: a few hundred M '
                             'parameters; full: the real sizes (GPU)')
    parser.add_argument('--families', nargs='+', choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument('--cameras', type=int, nargs='+', choices=(1, 2, 3), default=[1])
    parser.add_argument('--compile', nargs='+', choices=MODES, default=['none', 'default'],
                        help='compile modes to compare (none = eager, the baseline)')
    parser.add_argument('--compile-cameras', type=int, nargs='+', choices=(1, 2, 3),
                        default=None, help='camera counts that get the compiled modes '
                                           '(default: all of --cameras; others: eager only)')
    parser.add_argument('--device', default='auto',
                        help='auto (cpu for tiny / mid, cuda for full), cpu, cuda, cuda:N')
    parser.add_argument('--dtype', default='auto',
                        help='auto (tiny: float32; mid / full: bfloat16 where native), float32, '
                             'bfloat16, float16')
    parser.add_argument('--samples', type=int, default=60, help='timed calls per tiny row')
    parser.add_argument('--samples-large', type=int, default=12,
                        help='timed calls per mid / full row')
    parser.add_argument('--warmup', type=int, default=2, help='untimed calls after the first')
    parser.add_argument('--rounds', type=int, default=6,
                        help='timed calls interleaved over this many rounds (see measure)')
    parser.add_argument('--image-side', type=int, default=224, help='raw camera image side')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads (torch.set_num_threads)')
    parser.add_argument('--smolvla-vlm', default='',
                        help='--size full: local folder of SmolVLM2-500M-Video-Instruct '
                             '(config.json + tokenizer); default: the Hugging Face cache, else '
                             'its published widths')
    parser.add_argument('--deadline-s', type=float, default=0.0,
                        help='start no new group after this many seconds (0: no limit)')
    parser.add_argument('--dry-run', action='store_true',
                        help='print the rows and parameter counts (meta device); build nothing')
    parser.add_argument('--out', default='', help='also write the section to this file')
    parser.add_argument('--results', action='store_true',
                        help='write the section of benchmarks/RESULTS.md')
    args = parser.parse_args(argv)
    args.command = None if argv is None else ' '.join(argv)
    if 'none' not in args.compile:
        parser.error('--compile must include none (the eager baseline of every ratio)')
    if args.rounds < 1:
        parser.error('--rounds must be at least 1')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    groups = plan_groups(args)
    with tempfile.TemporaryDirectory(prefix='policy_latency_') as work:
        if args.dry_run:
            dry_run(groups, work, args)
            return 0
        cuda = [r for g in groups for r in g if r['device'].startswith('cuda')]
        if cuda and not torch.cuda.is_available():
            print(f'policy_latency: {label(cuda[0])} needs a CUDA GPU (torch.cuda.is_available() '
                  'is False); nothing was built. Use --dry-run to check the configs.',
                  file=sys.stderr)
            return 2
        loads, start = ['/'.join(f'{x:.1f}' for x in os.getloadavg())], time.monotonic()
        text = report([r for g in groups for r in g], args, loads * 2)
        for group in groups:
            if args.deadline_s and time.monotonic() - start > args.deadline_s:
                print(f'{label(group[0])}: not run (deadline)', flush=True)
                continue
            run_group(group, work, args)
            text = report([r for g in groups for r in g], args,
                          loads + ['/'.join(f'{x:.1f}' for x in os.getloadavg())])
            if args.out:
                with open(args.out, 'w', encoding='utf-8') as fh:
                    fh.write(text + '\n')
    print(text)
    if args.results:
        write_section(text, SECTION)
    return 0


if __name__ == '__main__':
    sys.exit(main())
