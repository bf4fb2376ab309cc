"""Per-family inference latency: π0, π0.5 and SmolVLA ``predict`` / ``predict_batch``, 1-3 cameras.

No ROS: the policy alone (pre-processing, the flow-matching sampler, unnormalize), the part of the
node's step that ``benchmarks/node_latency.py`` reports as ``model``. Every camera gets the same
raw ``--image-side`` square rgb8 image (each family resizes it to its model input), the state is
the checkpoint's typical state, the prompt is fixed. Per row: ``--warmup`` untimed calls, then
``--samples`` timed ``predict(obs)`` calls and ``--samples`` timed ``predict_batch([obs] * B)``
calls (B = ``--batch``); p50 / p99 in ms. With ``tiny`` all rows are built first and their timed
calls interleaved over ``--rounds`` rounds (a slow phase of a shared machine hits every row).
The baseline is π0 with 1 camera in the same run (1.0x); the other rows are ratios of their
``predict`` p50 to it.

Sizes:

- ``tiny`` (CPU, float32, default): π0 = the project's tiny π0 (random weights, written with
  ``save_pi0_checkpoint`` as in node_latency.py); π0.5 / SmolVLA = the LeRobot 0.4.4 fixtures in
  test/data (``pi05_ref``, ``smolvla_ref``). Each is loaded from its folder with
  :func:`retain_ros.policies.loader.load_policy`. Camera counts other than the fixtures' two are
  made in a temporary copy of the folder whose ``config.json`` drops ``wrist`` (1 camera) or adds
  ``side`` (3 cameras; the weights of all three families do not depend on the camera count).
- ``full`` (CUDA, bfloat16, for a GPU run; random weights, nothing loaded from files): π0 = the
  config ``benchmarks/full_size.py`` checks against transformers' default ``PI0Config``
  (PaliGemma gemma_2b + gemma_300m expert, 224 px, chunk 50, 10 steps); π0.5 = the fixture's
  config with its own variants (gemma_2b + gemma_300m) and LeRobot's π0.5 defaults (224 px,
  chunk 50, 10 steps), widths from the variant tables (no weights file); SmolVLA = the fixture's
  config with LeRobot's SmolVLA defaults (``HuggingFaceTB/SmolVLM2-500M-Video-Instruct``, 16 VLM
  layers, expert 0.75 wide, 512 px, chunk 50, 10 steps), which needs that VLM's config.json and
  tokenizer locally (the Hugging Face cache, or ``--smolvla-vlm DIR``): nothing is downloaded,
  and without it the SmolVLA rows say so. Built with the adapters' own builders
  (``Pi0Policy.from_spec`` / ``Pi05Policy.build`` / ``SmolVLAPolicy.build``, ``init_weights``).
  Text tokenizers: π0 the project's byte tokenizer, π0.5 the fixture's tiny PaliGemma tokenizer
  (both pad to a fixed ``tokenizer_max_length``, so the sequence length is the real one).

    .venv/bin/python benchmarks/policy_latency.py [--samples 30] [--cameras 1 2 3] [--results]
    python benchmarks/policy_latency.py --size full [--smolvla-vlm DIR]   # needs a GPU

``--results`` writes the table into the ``## Per-family inference latency`` section of
benchmarks/RESULTS.md (replacing that section only).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from typing import Callable
from typing import Dict
from typing import List

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (ROOT, HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from benchmarks.results import write_section  # noqa: E402

SECTION = '## Per-family inference latency'
FAMILIES = ('pi0', 'pi05', 'smolvla')
LABELS = {'pi0': 'π0', 'pi05': 'π0.5', 'smolvla': 'SmolVLA'}
CAMERAS = ('base', 'wrist', 'side')
DATA = os.path.join(ROOT, 'test', 'data')
FIXTURES = {'pi05': 'pi05_ref', 'smolvla': 'smolvla_ref'}
IMAGE_PREFIX = 'observation.images.'
INSTRUCTION = 'put the gripper on the red block'
SMOLVLA_VLM = 'HuggingFaceTB/SmolVLM2-500M-Video-Instruct'
#: LeRobot's π0.5 / SmolVLA config defaults the full-size models take over the fixtures' values
PI05_FULL = {'chunk_size': 50, 'n_action_steps': 50, 'num_inference_steps': 10,
             'image_resolution': [224, 224]}
SMOLVLA_FULL = {'vlm_model_name': SMOLVLA_VLM, 'num_vlm_layers': 16, 'chunk_size': 50,
                'n_action_steps': 50, 'num_steps': 10, 'resize_imgs_with_padding': [512, 512],
                'expert_width_multiplier': 0.75, 'self_attn_every_n_layers': 2,
                'attention_mode': 'cross_attn', 'tokenizer_max_length': 48}
#: published π0 inference figures (for reference next to the table; not measured here)
PUBLISHED = (
    'Published π0 figures for reference (as cited in issue 8; not measured here, other '
    'hardware and code): openpi, ≈73-75 ms per π0 inference on an RTX 4090; with hand-written '
    'kernels, 20-37 ms.')


# -- checkpoint folders (tiny) -------------------------------------------------------------------
def camera_config(cfg: dict, cameras: int) -> dict:
    """``cfg`` with exactly the first ``cameras`` of :data:`CAMERAS` as image features.

    Kept cameras keep their shape; an added camera (``side``) takes the first camera's shape.
    :raises ValueError: the config does not start with the cameras this benchmark expects.
    """
    features = cfg['input_features']
    images = [k[len(IMAGE_PREFIX):] for k in features if k.startswith(IMAGE_PREFIX)]
    if tuple(images) != CAMERAS[:len(images)]:
        raise ValueError(f'cameras {images} are not a prefix of {CAMERAS}')
    first = features[IMAGE_PREFIX + images[0]]
    new = {f'{IMAGE_PREFIX}{name}': dict(features.get(IMAGE_PREFIX + name, first))
           for name in CAMERAS[:cameras]}
    new.update({k: v for k, v in features.items() if not k.startswith(IMAGE_PREFIX)})
    return dict(cfg, input_features=new)


def fixture_folder(family: str, out_dir: str, cameras: int, overrides=None) -> str:
    """Copy the family's test fixture (no reference files) with ``cameras`` cameras."""
    src = os.path.join(DATA, FIXTURES[family])
    shutil.copytree(src, out_dir, ignore=shutil.ignore_patterns('reference*'))
    if family == 'pi05':
        shutil.copytree(os.path.join(out_dir, 'tiny_paligemma_tokenizer'),
                        os.path.join(out_dir, 'tokenizer'))
    path = os.path.join(out_dir, 'config.json')
    with open(path, encoding='utf-8') as f:
        cfg = camera_config(json.load(f), cameras)
    cfg.update(overrides or {})
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(cfg, f, indent=1)
    return out_dir


def tiny_policy(family: str, work: str, cameras: int):
    """Load the tiny policy of ``family`` with ``cameras`` cameras (``load_policy``, CPU, fp32)."""
    from retain_ros.policies.loader import load_policy
    from retain_ros.ros.tools.checkpoints import write_random_tiny_pi0

    out = os.path.join(work, f'{family}_{cameras}')
    if family == 'pi0':
        write_random_tiny_pi0(out, 1, CAMERAS[:cameras])
    else:
        fixture_folder(family, out, cameras)
    return load_policy(out, device='cpu', dtype='float32', warmup=False)


# -- full size (GPU) -----------------------------------------------------------------------------
def full_policy(family: str, work: str, cameras: int, smolvla_vlm: str = ''):
    """Build a full-size random-weight policy of ``family`` on CUDA in bfloat16 (see above)."""
    if family == 'pi0':
        from full_size import assert_default_pi0
        from full_size import policy_config

        from retain_ros.policies.pi0 import load_tokenizer
        from retain_ros.policies.pi0 import NormStats
        from retain_ros.policies.pi0 import Pi0Policy
        from retain_ros.policies.pi0 import pi0_config_from_dict
        from retain_ros.policies.pi0 import save_byte_tokenizer

        spec = pi0_config_from_dict(policy_config('full', CAMERAS[:cameras]))
        assert_default_pi0(spec)
        tokenizer = load_tokenizer(save_byte_tokenizer(os.path.join(work, 'byte_tokenizer')))
        return Pi0Policy.from_spec(spec, tokenizer, NormStats.identity(14, 14), device='cuda',
                                   dtype='bfloat16', init_weights=True, init_seed=1)
    out = os.path.join(work, f'{family}_{cameras}')
    shutil.rmtree(out, ignore_errors=True)
    if family == 'pi05':
        from retain_ros.policies.pi05.modeling_pi05 import Pi05Policy

        fixture_folder(family, out, cameras, PI05_FULL)
        os.remove(os.path.join(out, 'model.safetensors'))   # widths from the variant tables
        return Pi05Policy.build(out, device='cuda', dtype='bfloat16', init_weights=True,
                                init_seed=1)
    from retain_ros.policies.smolvla import SmolVLAPolicy

    overrides = dict(SMOLVLA_FULL)
    if smolvla_vlm:
        overrides['vlm_model_name'] = os.path.abspath(smolvla_vlm)
    fixture_folder(family, out, cameras, overrides)
    os.remove(os.path.join(out, 'model.safetensors'))
    shutil.rmtree(os.path.join(out, 'tiny_smolvlm'))
    return SmolVLAPolicy.build(out, device='cuda', dtype='bfloat16', init_weights=True,
                               init_seed=1)


# -- measurement ---------------------------------------------------------------------------------
def observation(policy, side: int):
    """One observation: a fixed random ``side`` x ``side`` rgb8 image per camera."""
    from retain_ros.policies.base import Observation

    rng = np.random.default_rng(0)
    images = {name: rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
              for name in policy.camera_names}
    typical = getattr(getattr(policy, 'stats', None), 'typical_state', None)
    state = np.asarray(typical(), np.float64) if typical else np.zeros(policy.state_dim)
    return Observation(images=images, instruction=INSTRUCTION, state=state)


def timed(call: Callable[[], object], samples: int) -> List[float]:
    """Milliseconds of ``samples`` calls (each returns numpy actions: device work included)."""
    out = []
    for _ in range(samples):
        t0 = time.perf_counter()
        call()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def warm(policy, side: int, warmup: int):
    """Return the row's observation after ``warmup`` untimed calls and its chunk's shape.

    The chunk is checked to be finite.
    """
    obs = observation(policy, side)
    chunk = None
    for _ in range(max(1, warmup)):
        chunk = policy.predict(obs)
    if not np.all(np.isfinite(chunk.actions)):
        raise RuntimeError(f'{policy.name}: non-finite actions')
    return obs, tuple(chunk.actions.shape)


def measure(policies: List[object], args) -> List[Dict[str, object]]:
    """``predict`` / ``predict_batch`` p50 / p99 (ms) of each policy, plus its sizes.

    The timed calls are interleaved over ``args.rounds`` rounds (each round times every policy
    in turn), so a slow phase of the shared machine falls on all rows alike.
    """
    rows, single, many = [], [[] for _ in policies], [[] for _ in policies]
    inputs = [warm(p, args.image_side, args.warmup) for p in policies]
    per_round = [args.samples // args.rounds + (r < args.samples % args.rounds)
                 for r in range(args.rounds)]
    for count in per_round:
        for i, (policy, (obs, _)) in enumerate(zip(policies, inputs)):
            single[i] += timed(functools.partial(policy.predict, obs), count)
            many[i] += timed(functools.partial(policy.predict_batch, [obs] * args.batch), count)
    for policy, (_, shape), one, batch in zip(policies, inputs, single, many):
        rows.append({'single': (float(np.percentile(one, 50)), float(np.percentile(one, 99))),
                     'batch': (float(np.percentile(batch, 50)),
                               float(np.percentile(batch, 99))),
                     'params': sum(p.numel() for p in policy.module.parameters()),
                     'chunk': shape})
    return rows


def run_rows(args) -> List[dict]:
    """Every (family, cameras) row; a row that cannot be built carries its reason.

    ``tiny``: all rows are built first and measured interleaved; ``full``: one policy at a time
    (the full-size models do not fit on one GPU together), so its rows are not interleaved.
    """
    import torch

    rows = [{'family': f, 'cameras': c} for f in args.families for c in args.cameras]
    groups = [rows] if args.size == 'tiny' else [[row] for row in rows]
    with tempfile.TemporaryDirectory(prefix='policy_latency_') as work:
        for group in groups:
            built = []
            for row in group:
                family, cams = row['family'], row['cameras']
                try:
                    built.append((row, tiny_policy(family, work, cams) if args.size == 'tiny'
                                  else full_policy(family, work, cams, args.smolvla_vlm)))
                except (FileNotFoundError, ValueError) as exc:
                    row['error'] = f'{type(exc).__name__}: {exc}'
                    print(f'{family} {cams} camera(s): not built: {row["error"]}', flush=True)
            with torch.inference_mode():
                results = measure([p for _, p in built], args)
            for (row, _), result in zip(built, results):
                row.update(result)
                print(f'{row["family"]} {row["cameras"]} camera(s): predict p50 '
                      f'{row["single"][0]:.1f} ms p99 {row["single"][1]:.1f} ms; '
                      f'predict_batch({args.batch}) p50 {row["batch"][0]:.1f} ms', flush=True)
            del built
            if args.size == 'full':
                torch.cuda.empty_cache()
    return rows


def table(rows: List[dict], args) -> str:
    """Markdown rows with ratios against π0 / 1 camera of the same run."""
    base = next((r for r in rows if r['family'] == 'pi0' and r['cameras'] == 1
                 and 'single' in r), None)
    lines = [f'| family | cameras | parameters | chunk | predict p50 / p99 (ms) | vs π0 1 cam '
             f'(p50) | predict_batch({args.batch}) p50 / p99 (ms) | per observation (p50) |',
             '|---|---|---|---|---|---|---|---|']
    for r in rows:
        label = LABELS[r['family']]
        if 'error' in r:
            lines.append(f'| {label} | {r["cameras"]} | not built: {r["error"]} | | | | | |')
            continue
        ratio = f'{r["single"][0] / base["single"][0]:.2f}x' if base else 'no baseline'
        lines.append(
            f'| {label} | {r["cameras"]} | {r["params"] / 1e6:.2f} M | {r["chunk"][0]}x'
            f'{r["chunk"][1]} | {r["single"][0]:.1f} / {r["single"][1]:.1f} | {ratio} | '
            f'{r["batch"][0]:.1f} / {r["batch"][1]:.1f} | {r["batch"][0] / args.batch:.1f} |')
    return '\n'.join(lines)


def machine_line(size: str) -> str:
    import torch

    if size == 'full':
        where = f'{torch.cuda.get_device_name(0)}, bfloat16'
    else:
        where = 'CPU, float32, no GPU'
    return (f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores '
            f'(shared), {where}, torch {torch.__version__}, {torch.get_num_threads()} torch '
            'thread(s)')


def report(rows: List[dict], args) -> str:
    """Return the RESULTS.md section."""
    command = 'benchmarks/policy_latency.py' + (' --size full' if args.size == 'full' else '')
    what = ('tiny configs: π0 = the project\'s tiny π0 (4 joints, 64 px model input); π0.5 / '
            'SmolVLA = the LeRobot 0.4.4 test fixtures (7-dim actions, 64 px)'
            if args.size == 'tiny' else 'full-size random-weight models (see the script)')
    lines = [
        SECTION, '',
        f'`OMP_NUM_THREADS={args.threads} .venv/bin/python {command} --samples {args.samples} '
        f'--warmup {args.warmup} --rounds {args.rounds} --results` on '
        f'{machine_line(args.size)}. Policy alone (no ROS), {what}; every camera gets the same '
        f'{args.image_side}x{args.image_side} rgb8 image; {args.warmup} warm-up calls, then '
        f'{args.samples} timed `predict` and {args.samples} timed `predict_batch` calls per row'
        + (f', interleaved over {args.rounds} rounds across all rows. ' if args.size == 'tiny'
           else ' (one model at a time). ') +
        'Ratios: `predict` p50 against π0 with 1 camera, measured in the same run. '
        'Cameras other than the fixtures\' two come from a copy of the fixture\'s config.json '
        'without `wrist` / with an added `side` (same weights).', '',
        table(rows, args), '']
    if args.size == 'tiny':
        lines += [
            'No GPU was lent for this task: the full-size figures the issue asks for (π0, π0.5, '
            'SmolVLA in bf16, p50 / p99 for 1-3 cameras) are NOT measured. The code path is '
            '`--size full` (CUDA, bf16, random weights; SmolVLA needs the SmolVLM2-500M config '
            'and tokenizer locally); the tiny rows above say nothing about full-size latency.',
            '']
    lines.append(PUBLISHED)
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', choices=('tiny', 'full'), default='tiny',
                        help='tiny: CPU float32 test-size models; full: CUDA bf16 full-size '
                             'random-weight models (needs a GPU)')
    parser.add_argument('--families', nargs='+', choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument('--cameras', type=int, nargs='+', choices=(1, 2, 3), default=[1, 2, 3])
    parser.add_argument('--samples', type=int, default=30)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--batch', type=int, default=2, help='observations per predict_batch')
    parser.add_argument('--rounds', type=int, default=5,
                        help='timed calls interleaved over this many rounds (see measure)')
    parser.add_argument('--image-side', type=int, default=224, help='raw camera image side')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads (torch.set_num_threads)')
    parser.add_argument('--smolvla-vlm', default='',
                        help=f'--size full: local folder of {SMOLVLA_VLM} (config.json + '
                             'tokenizer); default: the Hugging Face cache')
    parser.add_argument('--results', action='store_true',
                        help='write the section of benchmarks/RESULTS.md')
    args = parser.parse_args(argv)
    if 'pi0' not in args.families or 1 not in args.cameras:
        parser.error('the baseline (pi0, 1 camera) must be part of the run')
    if not 1 <= args.rounds <= args.samples:
        parser.error('--rounds must be between 1 and --samples')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.size == 'full' and not torch.cuda.is_available():
        print('policy_latency: --size full needs a CUDA GPU (torch.cuda.is_available() is '
              'False); nothing was built', file=sys.stderr)
        return 2
    load = os.getloadavg()[0]
    rows = run_rows(args)
    text = report(rows, args).replace(
        '\n\n| family', f' 1-minute load average {load:.1f} at the start, '
        f'{os.getloadavg()[0]:.1f} at the end (shared machine).\n\n| family', 1)
    print(text)
    if args.results:
        write_section(text, SECTION)
    return 0


if __name__ == '__main__':
    sys.exit(main())
