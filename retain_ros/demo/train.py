"""``retain-ros demo-train``: train the demo generalist and its finetune (tiny pi0, CPU, minutes).

1. **generalist**: the built-in tiny pi0 trained from scratch on scripted demonstrations of the
   generalist tasks (touch the red / blue / green / purple block) over the broad scene
   distribution (block positions, distractors, table colour, lighting);
2. **finetuned**: a full finetune of the generalist on the NEW task (put the gripper on the yellow
   block) from a few demonstrations in the narrow setting (``new_id``: one block region, default
   table, default lighting, one distractor).

Both are written with :func:`retain_ros.policies.pi0.save_pi0_checkpoint` in LeRobot pi0 layout
(``config.json``, ``model.safetensors``, normalizer files, ``tokenizer/``) under
:func:`retain_ros.demo.paths.demo_dir`. Runs are cached: nothing is trained when both checkpoints
exist and ``settings.json`` next to them holds the hash of the same settings.

Normalization: both checkpoints carry the statistics of the generalist's training data (same
robot, same joint ranges; the finetune data is a narrow subset of that range). The node
normalizes with the *finetuned* checkpoint's statistics at every alpha, as RETAIN does; statistics
of the few narrow finetune demos would make every alpha < 1 run the generalist's weights with
foreign statistics. ``--finetune-stats own`` uses the finetune data's statistics instead.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import fields
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from typing import Dict
from typing import List
from typing import Optional
from typing import Tuple

import numpy as np
import torch

from retain_ros.demo.data import DemoData
from retain_ros.demo.data import generate_demos
from retain_ros.demo.paths import checkpoint_complete
from retain_ros.demo.paths import demo_dir
from retain_ros.demo.paths import FINETUNED
from retain_ros.demo.paths import GENERALIST
from retain_ros.demo.paths import SETTINGS_FILE
from retain_ros.sim.tasks import GENERALIST_TASKS
from retain_ros.sim.tasks import NEW_TASK
from retain_ros.sim.world import JOINT_NAMES

LOG = logging.getLogger(__name__)

#: Bump when the training code changes what it produces (invalidates cached checkpoints).
FORMAT_VERSION = 3     # 3: trained on the serving image preprocessing (was OpenCV INTER_AREA)
CAMERA = 'base'


@dataclass
class TrainSettings:
    """Everything that determines the demo checkpoints (hashed for caching)."""

    seed: int = 0
    sim_image_size: int = 96
    #: 32 px = 16 image tokens (patch 8): at these widths the per-step cost is mostly fixed
    #: overhead, and 64 px (64 tokens) trained no better in the same wall time.
    model_image_size: int = 32
    chunk_size: int = 10
    control_period: float = 0.1
    num_inference_steps: int = 5
    #: byte tokenizer: the longest instruction ("put the gripper on the yellow block") is 37
    #: tokens with BOS and newline.
    tokenizer_max_length: int = 40
    #: the expert reaches any block within ~15 steps; later steps would only teach "stay".
    demo_steps: int = 15
    noise_prob: float = 0.3
    noise_std: float = 0.15
    generalist_episodes_per_task: int = 100
    generalist_all_targets: bool = True
    generalist_steps: int = 2000
    generalist_lr: float = 2e-3
    generalist_batch: int = 64
    finetune_episodes: int = 8
    finetune_steps: int = 300
    finetune_lr: float = 3e-4
    finetune_batch: int = 32
    finetune_stats: str = 'generalist'

    def digest(self) -> str:
        """Hash of the settings and :data:`FORMAT_VERSION`."""
        blob = json.dumps({'format': FORMAT_VERSION, 'sim': _sim_signature(), **asdict(self)},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _sim_signature() -> Dict[str, object]:
    """The sim world's geometry constants: a change there makes cached checkpoints stale."""
    from retain_ros.sim import world

    out: Dict[str, object] = {}
    for name, value in sorted(vars(world).items()):
        if name.isupper() and isinstance(value, (int, float, tuple, np.ndarray)):
            out[name] = np.asarray(value).tolist()
    return out


def quick_settings() -> TrainSettings:
    """Tiny settings for tests: seconds, not minutes (the policies learn nothing useful)."""
    return TrainSettings(generalist_episodes_per_task=1, generalist_steps=3,
                         generalist_batch=8, finetune_episodes=1, finetune_steps=2,
                         finetune_batch=8, demo_steps=4)


# ----------------------------------------------------------------------------- model plumbing
def _pi0():
    """Worker P's pi0 package, imported lazily (torch + transformers)."""
    from retain_ros.policies import pi0
    return pi0


def build_spec(settings: TrainSettings):
    """The tiny pi0 spec for the sim robot (3 joints, one camera)."""
    from retain_ros.policies.pi0.configuration_pi0 import pi0_config_from_dict
    from retain_ros.policies.pi0.configuration_pi0 import tiny_pi0_config

    cfg = tiny_pi0_config(len(JOINT_NAMES), len(JOINT_NAMES), chunk_size=settings.chunk_size,
                          camera_names=(CAMERA,), image_size=settings.model_image_size,
                          num_inference_steps=settings.num_inference_steps,
                          tokenizer_max_length=settings.tokenizer_max_length,
                          control_period=settings.control_period)
    return pi0_config_from_dict(cfg)


def byte_tokenizer():
    """The tiny pi0's byte-level tokenizer."""
    from retain_ros.policies.pi0.tokenizer_pi0 import build_byte_tokenizer
    from retain_ros.policies.pi0.tokenizer_pi0 import TextTokenizer

    return TextTokenizer(build_byte_tokenizer())


def build_processor(spec, stats):
    """A :class:`Pi0Processor` with the byte tokenizer and ``stats``."""
    return _pi0().Pi0Processor(spec, byte_tokenizer(), stats)


def compute_stats(data: DemoData, source: str):
    """Normalization statistics of a data set (:class:`NormStats`)."""
    from retain_ros.policies.pi0.processor_pi0 import NormStats

    return NormStats.from_data(data.states, data.actions, source=source)


class TensorDataset:
    """A demo data set turned into model-ready tensors once.

    Images go through the processor's own :meth:`pixel_values`, the function that prepares them
    at inference (LeRobot's resize-with-pad): the model trains on exactly what it will see.
    Training on OpenCV ``INTER_AREA`` thumbnails while serving bilinear ones (no antialias) was a
    train/serve skew (mean |difference| 0.016, up to 0.82 at block edges, in [-1, 1] units).

    :param data: the demonstrations (images at the sim's render size).
    :param processor: the processor (tokenizer, statistics, image size).
    """

    def __init__(self, data: DemoData, processor, block: int = 1024):
        camera = processor.spec.camera_names[0]
        parts = [processor.pixel_values([{camera: img} for img in data.images[i:i + block]])
                 for i in range(0, len(data.images), block)]
        self.images = torch.cat(parts)
        self.states = processor.state(list(data.states))
        self.actions = processor.normalize_actions(data.actions)
        tokens = processor.tokenize(data.instructions)
        self.input_ids = tokens['input_ids']
        self.attention_mask = tokens['attention_mask']
        self.instruction_index = torch.from_numpy(data.instruction_index)

    def __len__(self) -> int:
        return int(self.states.shape[0])

    def batch(self, index: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Model inputs (and ``actions`` labels) for the samples ``index``."""
        which = self.instruction_index[index]
        pixels = self.images[index]
        return {'state': self.states[index], 'input_ids': self.input_ids[which],
                'attention_mask': self.attention_mask[which], 'pixel_values': pixels,
                'pixel_attention_mask': torch.ones(len(index), 1, dtype=torch.bool),
                'actions': self.actions[index]}


def flow_matching_loss(model, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    """pi0's training loss: MSE between predicted and true flow velocity (noise - actions)."""
    return model(**batch).loss


def train_model(model, dataset: TensorDataset, steps: int, lr: float, batch_size: int,
                seed: int, desc: str, progress: bool = True) -> List[float]:
    """Train ``model`` in place with AdamW, linear warm-up and cosine decay.

    :return: the loss of every step.
    """
    from tqdm import tqdm

    generator = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, min(100, steps // 10))

    def schedule(step):
        if step < warmup:
            return (step + 1) / warmup
        done = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + np.cos(np.pi * min(1.0, done)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    model.train()
    losses = []
    bar = tqdm(range(int(steps)), desc=desc, disable=not progress, leave=False,
               file=sys.stderr, mininterval=1.0)
    for _ in bar:
        index = torch.randint(0, len(dataset), (min(batch_size, len(dataset)),),
                              generator=generator)
        loss = flow_matching_loss(model, dataset.batch(index))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if len(losses) % 20 == 0:
            bar.set_postfix(loss=f'{np.mean(losses[-20:]):.4f}')
    bar.close()
    model.eval()
    return losses


# ------------------------------------------------------------------------------ the pipeline
def _save(policy, state_dict, stats, out_dir: str, settings: TrainSettings, role: str) -> None:
    _pi0().save_pi0_checkpoint(policy, out_dir, stats, state_dict=state_dict)
    with open(os.path.join(out_dir, 'demo_info.json'), 'w', encoding='utf-8') as f:
        json.dump({'role': role, 'settings': asdict(settings), 'hash': settings.digest(),
                   'generalist_tasks': GENERALIST_TASKS, 'new_task': NEW_TASK}, f, indent=2)


def _progress_bar(total: int, desc: str, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not progress, leave=False, file=sys.stderr,
                mininterval=1.0)


def train_demo(settings: TrainSettings, out_root: str, progress: bool = True) -> Dict:
    """Generate data, train both policies and write both checkpoints under ``out_root``.

    :return: a summary (timings, losses, data sizes) also stored in ``settings.json``.
    """
    t0 = time.perf_counter()
    torch.manual_seed(settings.seed)
    np.random.seed(settings.seed)
    spec = build_spec(settings)
    common = dict(horizon=settings.chunk_size, dt=settings.control_period,
                  steps=settings.demo_steps, image_size=settings.sim_image_size,
                  noise_prob=settings.noise_prob, noise_std=settings.noise_std)

    n_gen = settings.generalist_episodes_per_task * len(GENERALIST_TASKS)
    with _progress_bar(n_gen, 'generalist demos', progress) as bar:
        gen_data = generate_demos(GENERALIST_TASKS, 'generalist',
                                  settings.generalist_episodes_per_task,
                                  progress=bar.update,
                                  all_targets=settings.generalist_all_targets, **common)
    gen_stats = compute_stats(gen_data, 'demo generalist training data')
    policy = _pi0().Pi0Policy.from_spec(spec, byte_tokenizer(), gen_stats, init_weights=True,
                                        init_seed=settings.seed, noise_seed=settings.seed)
    model = policy.module
    gen_set = TensorDataset(gen_data, policy.processor)
    n_gen_samples, n_gen_episodes = len(gen_data), gen_data.episodes
    del gen_data
    t1 = time.perf_counter()
    gen_losses = train_model(model, gen_set, settings.generalist_steps, settings.generalist_lr,
                             settings.generalist_batch, settings.seed, 'train generalist',
                             progress)
    del gen_set
    generalist = {k: v.detach().clone() for k, v in model.state_dict().items()}
    t2 = time.perf_counter()

    with _progress_bar(settings.finetune_episodes, 'finetune demos', progress) as bar:
        ft_data = generate_demos([NEW_TASK], 'new_id', settings.finetune_episodes,
                                 progress=bar.update, **common)
    if settings.finetune_stats == 'own':
        ft_stats = compute_stats(ft_data, 'demo finetune training data')
    else:
        ft_stats = gen_stats
    policy.processor = build_processor(spec, ft_stats)
    ft_set = TensorDataset(ft_data, policy.processor)
    ft_samples = len(ft_set)
    ft_losses = train_model(model, ft_set, settings.finetune_steps, settings.finetune_lr,
                            settings.finetune_batch, settings.seed + 1, 'finetune new task',
                            progress)
    t3 = time.perf_counter()

    os.makedirs(out_root, exist_ok=True)
    staging = tempfile.mkdtemp(prefix='.demo-train-', dir=out_root)
    try:
        _save(policy, generalist, gen_stats, os.path.join(staging, GENERALIST), settings,
              'generalist')
        finetuned = {k: v.detach().clone() for k, v in model.state_dict().items()}
        _save(policy, finetuned, ft_stats, os.path.join(staging, FINETUNED), settings,
              'finetuned')
        for name in (GENERALIST, FINETUNED):
            final = os.path.join(out_root, name)
            if os.path.exists(final):
                shutil.rmtree(final)
            os.replace(os.path.join(staging, name), final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary = {
        'hash': settings.digest(), 'format': FORMAT_VERSION, 'settings': asdict(settings),
        'generalist_samples': int(n_gen_samples), 'generalist_episodes': int(n_gen_episodes),
        'finetune_samples': int(ft_samples),
        'generalist_final_loss': float(np.mean(gen_losses[-50:])) if gen_losses else None,
        'finetune_final_loss': float(np.mean(ft_losses[-50:])) if ft_losses else None,
        'seconds': {'generalist': round(t2 - t0, 1), 'finetune': round(t3 - t2, 1),
                    'generalist_training': round(t2 - t1, 1), 'total': round(t3 - t0, 1)},
        'created': time.strftime('%Y-%m-%dT%H:%M:%S'),
    }
    with open(os.path.join(out_root, SETTINGS_FILE), 'w', encoding='utf-8') as f:
        json.dump(summary, f, indent=2)
    LOG.info('demo checkpoints written to %s in %.0f s', out_root, t3 - t0)
    return {'summary': summary, 'generalist': generalist, 'finetuned': finetuned,
            'policy': policy}


def cached_summary(root: str, settings: TrainSettings) -> Optional[Dict]:
    """The stored summary when both checkpoints exist and were made with ``settings``."""
    path = os.path.join(root, SETTINGS_FILE)
    if not all(checkpoint_complete(os.path.join(root, n)) for n in (GENERALIST, FINETUNED)):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return None
    return summary if summary.get('hash') == settings.digest() else None


def ensure_demo_checkpoints(root: Optional[str] = None,
                            settings: Optional[TrainSettings] = None,
                            force: bool = False, progress: bool = True) -> Tuple[str, str]:
    """Train the demo checkpoints unless up-to-date ones exist.

    :return: ``(generalist_dir, finetuned_dir)``.
    """
    root = demo_dir(root)
    settings = settings or TrainSettings()
    if force or cached_summary(root, settings) is None:
        torch.set_num_threads(2)
        train_demo(settings, root, progress=progress)
    else:
        LOG.info('demo checkpoints up to date in %s (settings hash %s)', root, settings.digest())
    return os.path.join(root, GENERALIST), os.path.join(root, FINETUNED)


# ------------------------------------------------------------------------------- evaluation
#: The offline sweep: alpha (weight on the FINETUNED model) for all groups, and a
#: language-only merge (vision and action finetuned, language half way), as in the ROS demo.
DEFAULT_SWEEP = ({'alpha': 0.0}, {'alpha': 0.25}, {'alpha': 0.5}, {'alpha': 0.75},
                 {'alpha': 1.0}, {'alpha': 1.0, 'language': 0.5})
#: Scene seeds of the offline sweep start here (training scenes use
#: :data:`retain_ros.demo.data.TRAIN_SEED_OFFSET` and up).
EVAL_SEED_OFFSET = 0


def offline_sweep(root: str, episodes: int, settings: TrainSettings, progress: bool = True,
                  sweep=DEFAULT_SWEEP) -> List[Dict]:
    """Closed-loop alpha sweep (no ROS) over the checkpoints in ``root``; prints a table.

    The policy and merger are built exactly as the policy node builds them
    (:func:`retain_ros.demo.rollout.load_pair`: finetuned config / statistics / tokenizer, the
    merging library's LiveMerger), so the numbers are those of the same merged weights.
    """
    from retain_ros.demo.rollout import alpha_sweep
    from retain_ros.demo.rollout import load_pair

    policy, merger = load_pair(os.path.join(root, GENERALIST), os.path.join(root, FINETUNED),
                               noise_seed=settings.seed)
    splits = {'new_id': episodes, 'new_ood': episodes, 'generalist': episodes}
    t0 = time.perf_counter()
    with _progress_bar(len(sweep) * 3 * episodes, 'offline alpha sweep', progress) as b:
        rows = alpha_sweep(policy, merger, sweep, splits, seed_offset=EVAL_SEED_OFFSET,
                           progress=b.update, image_size=settings.sim_image_size)
    print(format_sweep(rows))
    print(f'({episodes} episodes per cell; 95% Wilson interval in brackets; '
          f'{time.perf_counter() - t0:.0f} s)')
    return rows


def format_sweep(rows: List[Dict]) -> str:
    """Plain-text table: one line per setting, success rate (and 95% Wilson interval) per
    split."""
    from retain_ros.evaluation.stats import wilson_interval

    splits = []
    for row in rows:
        if row['split'] not in splits:
            splits.append(row['split'])
    width = 22
    lines = ['setting                 ' + ''.join(f'{s:>{width}}' for s in splits)]
    table: Dict[str, Dict[str, str]] = {}
    for row in rows:
        key = ','.join(f'{k}={v:g}' for k, v in row['setting'].items())
        low, high = wilson_interval(row['successes'], row['episodes'])
        table.setdefault(key, {})[row['split']] = \
            f'{row["successes"]}/{row["episodes"]} {row["rate"]:.2f} [{low:.2f},{high:.2f}]'
    for key, cells in table.items():
        lines.append(f'{key:<24}' + ''.join(f'{cells.get(s, ""):>{width}}' for s in splits))
    return '\n'.join(lines)


# ------------------------------------------------------------------------------------ CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='retain-ros demo-train',
        description='Train (or reuse) the demo generalist and finetuned tiny pi0 checkpoints.')
    p.add_argument('--dir', default=None,
                   help='output directory (default $RETAIN_ROS_DEMO_DIR or '
                        '~/.cache/retain_ros/demo)')
    p.add_argument('--force', action='store_true', help='retrain even when up to date')
    p.add_argument('--quick', action='store_true',
                   help='tiny data and a few steps (tests; the policies learn nothing)')
    p.add_argument('--seed', type=int, default=None, help='training seed')
    p.add_argument('--generalist-steps', type=int, default=None)
    p.add_argument('--finetune-steps', type=int, default=None)
    p.add_argument('--finetune-episodes', type=int, default=None)
    p.add_argument('--generalist-episodes', type=int, default=None,
                   help='generalist demonstrations per task')
    p.add_argument('--finetune-stats', choices=('generalist', 'own'), default=None,
                   help="normalization statistics of the finetuned checkpoint")
    p.add_argument('--set', action='append', default=[], metavar='NAME=VALUE',
                   help='override any training setting (repeatable), e.g. '
                        '--set generalist_lr=2e-3')
    p.add_argument('--eval', type=int, default=0, metavar='N',
                   help='then run an offline (no ROS) closed-loop alpha sweep with N episodes '
                        'per split and setting, and print success rates (trains only when the '
                        'checkpoints are missing or stale)')
    p.add_argument('--no-progress', action='store_true', help='no progress bars')
    return p


def settings_from_args(args) -> TrainSettings:
    """Settings from parsed command-line arguments."""
    settings = quick_settings() if args.quick else TrainSettings()
    overrides = {'seed': args.seed, 'generalist_steps': args.generalist_steps,
                 'finetune_steps': args.finetune_steps,
                 'finetune_episodes': args.finetune_episodes,
                 'generalist_episodes_per_task': args.generalist_episodes,
                 'finetune_stats': args.finetune_stats}
    types = {f.name: type(getattr(settings, f.name)) for f in fields(TrainSettings)}
    for item in getattr(args, 'set', None) or []:
        key, sep, value = item.partition('=')
        key = key.strip().replace('-', '_')
        if not sep or key not in types:
            raise SystemExit(f'--set {item!r}: expected NAME=VALUE with NAME one of '
                             f'{sorted(types)}')
        if types[key] is bool:
            if value.strip().lower() not in ('0', '1', 'true', 'false', 'yes', 'no'):
                raise SystemExit(f'--set {item!r}: expected a boolean')
            overrides[key] = value.strip().lower() in ('1', 'true', 'yes')
        else:
            overrides[key] = types[key](value)
    for key, value in overrides.items():
        if value is not None and key in types:
            setattr(settings, key, value)
    return settings


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``retain-ros demo-train``."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    torch.set_num_threads(2)
    settings = settings_from_args(args)
    root = demo_dir(args.dir)
    progress = not args.no_progress
    summary = cached_summary(root, settings)
    if summary is not None and not args.force:
        print(f'demo checkpoints up to date in {root} (settings hash {settings.digest()}); '
              'use --force to retrain')
    else:
        summary = train_demo(settings, root, progress=progress)['summary']
        seconds = summary['seconds']
        print(f'generalist: {os.path.join(root, GENERALIST)}\n'
              f'finetuned:  {os.path.join(root, FINETUNED)}\n'
              f'trained in {seconds["total"]:.0f} s (generalist {seconds["generalist"]:.0f} s, '
              f'finetune {seconds["finetune"]:.0f} s); final losses: generalist '
              f'{summary["generalist_final_loss"]:.4f}, finetune '
              f'{summary["finetune_final_loss"]:.4f}')
    if args.eval:
        rows = offline_sweep(root, args.eval, settings, progress=progress)
        with open(os.path.join(root, 'offline_sweep.json'), 'w', encoding='utf-8') as f:
            json.dump(rows, f, indent=2)
    return 0
