"""``retain-ros demo-train``: the demo's pretrained model and its finetune (tiny pi0, CPU).

1. **pretrained** (``--stage pretrained``, ~20 min on 2 cores): the built-in tiny pi0 trained from
   scratch (:mod:`retain_ros.demo.pretraining`). One is SHIPPED
   (:data:`~retain_ros.demo.paths.SHIPPED_PRETRAINED`) and used whenever the pretraining
   settings are the defaults; ``--retrain-pretrained`` trains it again;
2. **finetuned**: a full finetune of the pretrained model on the new task
   (:mod:`retain_ros.demo.finetuning`), well under a minute;
3. optionally ``--eval N`` (:mod:`retain_ros.demo.offline_sweep`), ``--continual ALPHA``
   (:mod:`retain_ros.demo.continual`) and ``--probe`` (:mod:`retain_ros.demo.probe`).
"""
from __future__ import annotations

import argparse
from dataclasses import fields
import json
import logging
import os
from typing import List
from typing import Optional

from retain_ros.demo.checkpoints import read_info
from retain_ros.demo.paths import checkpoint_complete
from retain_ros.demo.paths import demo_dir
from retain_ros.demo.paths import FINETUNED
from retain_ros.demo.paths import PRETRAINED
from retain_ros.demo.paths import SHIPPED_PRETRAINED
from retain_ros.demo.settings import quick_settings
from retain_ros.demo.settings import TrainSettings
from retain_ros.demo.validation import VALIDATION_SEED_OFFSET

#: Threads of torch's CPU kernels while training (the machine the demo was tuned on).
TORCH_THREADS = 2


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of ``retain-ros demo-train``."""
    p = argparse.ArgumentParser(
        prog='retain-ros demo-train',
        description='Train (or reuse) the demo pretrained and finetuned tiny pi0 checkpoints.')
    p.add_argument('--dir', default=None,
                   help='output directory (default $RETAIN_ROS_DEMO_DIR or '
                        '~/.cache/retain_ros/demo)')
    p.add_argument('--stage', choices=('all', 'pretrained'), default='all',
                   help='all (default): the pretrained model (shipped unless the settings '
                        'differ) and its finetune; pretrained: train only the pretrained model, '
                        'into --out')
    p.add_argument('--out', default=None,
                   help='--stage pretrained: output checkpoint directory (default '
                        f'DIR/{PRETRAINED}; retain_ros/demo/pretrained rebuilds the shipped one)')
    p.add_argument('--retrain-pretrained', action='store_true',
                   help='train the pretrained model here instead of using the shipped one')
    p.add_argument('--force', action='store_true', help='retrain the finetune even when up to '
                   'date')
    p.add_argument('--quick', action='store_true',
                   help='tiny data and a few steps (tests; the policies learn nothing)')
    p.add_argument('--seed', type=int, default=None, help='training seed')
    p.add_argument('--pretrained-steps', type=int, default=None,
                   help='action training steps of the pretrained model')
    p.add_argument('--finetune-steps', type=int, default=None)
    p.add_argument('--finetune-episodes', type=int, default=None)
    p.add_argument('--pretrained-episodes', type=int, default=None,
                   help='pretraining demonstrations per generalist task')
    p.add_argument('--set', action='append', default=[], metavar='NAME=VALUE',
                   help='override any training setting (repeatable), e.g. '
                        '--set pretrained_lr=2e-3')
    p.add_argument('--eval', type=int, default=0, metavar='N',
                   help='then run the offline (no ROS) closed-loop alpha sweep with N episodes '
                        'per split and setting, and print success rates (trains only when the '
                        'checkpoints are missing or stale)')
    p.add_argument('--seeds', choices=('heldout', 'validation'), default='heldout',
                   help='scene seeds of --eval: heldout (from 0; the reported tables) or '
                        f'validation (from {VALIDATION_SEED_OFFSET}; for choosing settings)')
    p.add_argument('--continual', type=float, default=None, metavar='ALPHA',
                   help='then run the continual chain with this alpha: merge, finetune the '
                        'merge on a second new task (touch the cyan block), merge again, and '
                        'evaluate --eval episodes (default 20) per split on held-out seeds')
    p.add_argument('--probe', nargs='*', metavar='CHECKPOINT', default=None,
                   help='what the policies act on: flow loss on validation samples with the '
                        'instruction, the image or the state shuffled across samples, on '
                        'generalist-task scenes (default: the demo pretrained model and its '
                        'finetune); no training')
    p.add_argument('--no-progress', action='store_true', help='no progress bars')
    return p


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    """Return the settings of parsed command-line arguments (``--quick``, options, ``--set``)."""
    settings = quick_settings() if args.quick else TrainSettings()
    overrides = {'seed': args.seed, 'pretrained_steps': args.pretrained_steps,
                 'finetune_steps': args.finetune_steps,
                 'finetune_episodes': args.finetune_episodes,
                 'pretrained_episodes_per_task': args.pretrained_episodes}
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


def _probe(args: argparse.Namespace, root: str, settings: TrainSettings) -> int:
    """Print :func:`~retain_ros.demo.probe.conditioning_probe` of each checkpoint."""
    from retain_ros.demo.probe import conditioning_probe
    from retain_ros.demo.probe import format_probe

    pretrained = os.path.join(root, PRETRAINED)
    paths = args.probe or [pretrained if checkpoint_complete(pretrained)
                           else SHIPPED_PRETRAINED, os.path.join(root, FINETUNED)]
    for path in paths:
        if not checkpoint_complete(path):
            print(f'{path}: no checkpoint, skipped')
            continue
        print(format_probe(f'{path} (generalist-task scenes)',
                           conditioning_probe(path, settings)))
    return 0


def _train_pretrained_only(args: argparse.Namespace, root: str, settings: TrainSettings,
                           progress: bool) -> int:
    """Train the pretrained model into ``--out`` and print its summary."""
    from retain_ros.demo.pretraining import train_pretrained

    out = args.out or os.path.join(root, PRETRAINED)
    info = train_pretrained(settings, out, progress=progress)
    last = info['curve'][-1] if info['curve'] else {}
    print(f'pretrained: {out} (settings hash {info["hash"]}, data digest '
          f'{info["data_digest"]}); trained in {info["seconds"]["training"]:.0f} s; final '
          f'loss {last.get("loss")}, validation success {last.get("val_success")}')
    return 0


def _write_rows(path: str, rows) -> None:
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(rows, f, indent=2)


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``retain-ros demo-train``."""
    import torch

    from retain_ros.demo.pipeline import ensure_demo_checkpoints

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    torch.set_num_threads(TORCH_THREADS)
    settings = settings_from_args(args)
    root = demo_dir(args.dir)
    progress = not args.no_progress
    if args.continual is not None and not 0.0 <= args.continual <= 1.0:
        raise SystemExit(f'--continual {args.continual}: alpha must be in [0, 1]')
    if args.probe is not None:
        return _probe(args, root, settings)
    if args.stage == 'pretrained':
        return _train_pretrained_only(args, root, settings, progress)
    pretrained, finetuned = ensure_demo_checkpoints(
        root, settings, force=args.force, progress=progress,
        retrain_pretrained=args.retrain_pretrained)
    ft = read_info(finetuned) or {}
    print(f'pretrained: {pretrained}\nfinetuned:  {finetuned} (final loss '
          f'{ft.get("final_loss")})')
    if args.eval and args.continual is None:
        from retain_ros.demo.offline_sweep import EVAL_SEED_OFFSET
        from retain_ros.demo.offline_sweep import offline_sweep

        offset = VALIDATION_SEED_OFFSET if args.seeds == 'validation' else EVAL_SEED_OFFSET
        rows = offline_sweep(root, args.eval, settings, progress=progress, seed_offset=offset)
        print(f'(scene seeds: {args.seeds}, from {offset})')
        _write_rows(os.path.join(root, 'offline_sweep.json'), rows)
    if args.continual is not None:
        from retain_ros.demo.continual import continual_chain

        rows = continual_chain(root, settings, args.continual, args.eval or 20, pretrained,
                               finetuned, progress)
        _write_rows(os.path.join(root, 'continual.json'), rows)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
