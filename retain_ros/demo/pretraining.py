"""Training the demo's pretrained model: the built-in tiny pi0 from scratch, in two stages.

1. VLM pretraining (:func:`pretrain_vlm`): the vision-language part learns to point at the
   instructed block (:func:`~retain_ros.demo.objectives.pointing_loss`);
2. actions: with the VLM frozen (:attr:`TrainSettings.freeze_vlm`), the action expert learns the
   demonstrated actions by flow matching.

The data are scripted demonstrations of the generalist tasks (touch the red / blue / green /
purple block) over the broad scene distribution (~20 min on 2 cores with the default settings).
The model trained with the default settings is shipped
(:data:`retain_ros.demo.paths.SHIPPED_PRETRAINED`).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from typing import Dict
from typing import List

import numpy as np
import torch

from retain_ros.demo.checkpoints import write_atomically
from retain_ros.demo.checkpoints import write_info
from retain_ros.demo.dataset import data_digest
from retain_ros.demo.dataset import pretrained_data
from retain_ros.demo.dataset import TensorDataset
from retain_ros.demo.model import build_spec
from retain_ros.demo.model import build_tokenizer
from retain_ros.demo.model import compute_stats
from retain_ros.demo.objectives import pointing_objective
from retain_ros.demo.plots import plot_curve
from retain_ros.demo.probe import probe_losses
from retain_ros.demo.settings import FORMAT_VERSION
from retain_ros.demo.settings import pretrained_digest
from retain_ros.demo.settings import pretrained_settings
from retain_ros.demo.settings import TrainSettings
from retain_ros.demo.trainer import seeded_torch
from retain_ros.demo.trainer import train_model
from retain_ros.demo.validation import VALIDATION_SEED_OFFSET
from retain_ros.demo.validation import validation_rate
from retain_ros.demo.validation import validation_samples
from retain_ros.merging.digests import file_sha256
from retain_ros.sim.tasks import GENERALIST_TASKS

LOG = logging.getLogger(__name__)


def pretrain_vlm(policy, dataset: TensorDataset, settings: TrainSettings,
                 checks: TensorDataset, check_every: int, progress: bool = True) -> List[Dict]:
    """Stage 1 of the pretrained model: pretrain the vision-language part on pointing alone.

    A real pi0 starts from PaliGemma, a VLM pretrained (among other things) to ground referring
    expressions; the action expert then learns to act on what the VLM already grounds. This is
    that stage for the tiny pi0, for ``vlm_steps`` steps at ``vlm_lr``: mark the instructed
    block's image token at VLM layer ``pointing_layer``
    (:func:`~retain_ros.demo.objectives.pointing_loss`); about 96% of validation samples are
    marked right after 1000 steps. With the VLM then frozen, the expert learns to read the mark:
    the shipped pretrained model's loss grows x4 with the instructions shuffled.

    :return: the stage's curve: the pointing loss (key ``grounding_loss``) every 100 steps, the
        pointing accuracy on ``checks`` (key ``val_grounding``) every ``check_every`` steps and
        at the end.
    """
    steps = int(settings.vlm_steps)
    if steps <= 0:
        return []
    loss_fn, accuracy = pointing_objective(policy.processor.tokenizer, settings.pointing_layer)
    curve: List[Dict] = []
    losses: List[float] = []

    def on_step(step: int, loss: float) -> None:
        losses.append(loss)
        if step % 100 == 0 or step == steps:
            point = {'step': step, 'grounding_loss': round(float(np.mean(losses[-100:])), 5)}
            if step % check_every == 0 or step == steps:
                point['val_grounding'] = accuracy(policy.module, checks)
                LOG.info('VLM pretraining step %d: pointing loss %.3f, validation pointing '
                         'accuracy %.2f', step, point['grounding_loss'], point['val_grounding'])
            curve.append(point)

    train_model(policy.module, dataset, steps, settings.vlm_lr, settings.pretrained_batch,
                settings.seed + 2, 'pretrain VLM (pointing)', progress, on_step=on_step,
                loss_fn=loss_fn)
    return curve


def train_pretrained(settings: TrainSettings, out_dir: str, progress: bool = True,
                     validate_every: int = 1000, validation_episodes: int = 24) -> Dict:
    """Train the pretrained model from scratch and write it to ``out_dir``.

    With ``vlm_steps``, the VLM is first pretrained on pointing (:func:`pretrain_vlm`). Every
    ``validate_every`` action steps and at the end, the model runs ``validation_episodes``
    closed-loop episodes on the validation seeds (never the held-out ones); loss, success, the
    instruction probe and pointing accuracy go into the training curve (``demo_info.json`` and
    ``training_curve.png``).

    :return: the ``demo_info.json`` contents.
    """
    t0 = time.perf_counter()
    work = tempfile.mkdtemp(prefix='.demo-tokenizer-')
    try:
        with seeded_torch(settings.seed):
            info, policy, stats = _train(settings, work, progress, validate_every,
                                         validation_episodes, t0)

        def write(staging: str) -> None:
            from retain_ros.policies.pi0 import save_pi0_checkpoint

            save_pi0_checkpoint(policy, staging, stats)
            info['weights_sha256'] = file_sha256(os.path.join(staging, 'model.safetensors'))
            write_info(staging, info)
            plot_curve(info['curve'], os.path.join(staging, 'training_curve.png'),
                       f'demo pretrained model ({settings.vlm_steps} + '
                       f'{settings.pretrained_steps} steps)', info.get('vlm_curve'))

        write_atomically(out_dir, write)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    LOG.info('pretrained model written to %s in %.0f s', out_dir, time.perf_counter() - t0)
    return info


def _train(settings: TrainSettings, work: str, progress: bool, validate_every: int,
           validation_episodes: int, t0: float):
    """Return ``(info, policy, stats)``: both stages of :func:`train_pretrained` run."""
    from retain_ros.policies.pi0 import Pi0Policy

    data = pretrained_data(settings, progress)
    digest = data_digest(data)
    stats = compute_stats(data, 'demo generalist training data')
    policy = Pi0Policy.from_spec(build_spec(settings), build_tokenizer(work), stats,
                                 init_weights=True, init_seed=settings.seed,
                                 noise_seed=settings.seed)
    dataset = TensorDataset(data, policy.processor)
    n_samples, n_episodes = len(data), data.episodes
    del data
    checks = accuracy = None
    if settings.vlm_steps > 0:
        checks = validation_samples(settings, policy.processor, 60)
        accuracy = pointing_objective(policy.processor.tokenizer, settings.pointing_layer)[1]
    probe_set = validation_samples(settings, policy.processor, 20, motion_only=True)
    vlm_curve = pretrain_vlm(policy, dataset, settings, checks, validate_every, progress)
    curve: List[Dict] = []
    losses: List[float] = []

    def on_step(step: int, loss: float) -> None:
        losses.append(loss)
        last = step == settings.pretrained_steps
        if step % 100 == 0 or last:
            point = {'step': step, 'loss': round(float(np.mean(losses[-100:])), 5)}
            if validate_every and (step % validate_every == 0 or last):
                point['val_success'] = validation_rate(policy, validation_episodes,
                                                       settings.sim_image_size)
                probe = probe_losses(policy.module, probe_set, settings.seed, repeats=2)
                point['val_instruction_ratio'] = round(
                    probe['shuffled_instruction'] / probe['loss'], 4)
                if checks is not None:
                    point['val_grounding'] = accuracy(policy.module, checks)
                LOG.info('pretrained model step %d: loss %.4f, validation success %.2f, '
                         'loss with instructions shuffled x%.3f, pointing accuracy %s', step,
                         point['loss'], point['val_success'], point['val_instruction_ratio'],
                         point.get('val_grounding'))
            curve.append(point)

    if settings.freeze_vlm:
        for name, param in policy.module.named_parameters():
            if name.startswith('model.vlm.'):
                param.requires_grad_(False)
    t1 = time.perf_counter()
    train_model(policy.module, dataset, settings.pretrained_steps, settings.pretrained_lr,
                settings.pretrained_batch, settings.seed, 'train actions', progress,
                on_step=on_step)
    t2 = time.perf_counter()
    for param in policy.module.parameters():
        param.requires_grad_(True)
    info = {'role': 'generalist', 'settings': pretrained_settings(settings),
            'hash': pretrained_digest(settings), 'format': FORMAT_VERSION,
            'data_digest': digest, 'samples': int(n_samples), 'episodes': int(n_episodes),
            'generalist_tasks': GENERALIST_TASKS,
            'validation': {'seed_offset': VALIDATION_SEED_OFFSET,
                           'episodes': validation_episodes},
            **({'vlm_curve': vlm_curve} if vlm_curve else {}), 'curve': curve,
            'seconds': {'data': round(t1 - t0, 1), 'training': round(t2 - t1, 1)},
            'torch': torch.__version__, 'created': time.strftime('%Y-%m-%dT%H:%M:%S'),
            'command': 'retain-ros demo-train --stage pretrained'}
    return info, policy, stats
