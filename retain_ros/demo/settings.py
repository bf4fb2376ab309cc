"""The demo's training settings and the digests that cache its checkpoints.

:class:`TrainSettings` holds everything that determines the demo checkpoints. Its digests
(:meth:`TrainSettings.digest`, :func:`pretrained_digest`, :func:`finetune_digest`) are the cache
keys written into each checkpoint's ``demo_info.json``; the shipped pretrained model
(``retain_ros/demo/pretrained/``) is used only while :func:`pretrained_digest` of the settings
equals the hash it was made with. So the hashed dictionary is frozen:

- its keys are the setting names the shipped model was made with: :data:`HASH_KEYS` maps each
  renamed setting to its key (``pretrained_steps`` is hashed as ``generalist_steps``);
- :data:`RETIRED_SETTINGS`: options that were deleted, hashed at the one value every checkpoint
  is made with;
- :data:`ADDED_SETTINGS`: settings added after the shipped model was made, left out of the hash
  at the value that reproduces what was made before they existed.
"""
from __future__ import annotations

from dataclasses import dataclass
from dataclasses import fields
from typing import Dict

import numpy as np

from retain_ros.merging.digests import json_digest
from retain_ros.merging.digests import short_sha256
from retain_ros.sim.tasks import get_task
from retain_ros.sim.tasks import NEW_TASK

#: Bump when the training code changes what it produces (invalidates cached checkpoints).
FORMAT_VERSION = 5     # 5: pointing VLM stage, frozen VLM, narrow sides at random


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
    #: depth of the tiny pi0's Gemma towers (the VLM and the action expert share it: their
    #: attention is joint); 0 keeps ``retain_tiny``'s 2.
    model_layers: int = 4
    #: text tokens per prompt (word tokenizer: BOS + up to 7 words).
    tokenizer_max_length: int = 8
    #: a whole episode (:data:`retain_ros.demo.rollout.EPISODE_STEPS`): from a spread start pose
    #: the expert needs up to ~25 steps, and the rest teaches "stay on the block".
    demo_steps: int = 30
    noise_prob: float = 0.3
    noise_std: float = 0.15
    #: scenes per generalist task (each demonstrated once per block of a generalist colour).
    pretrained_episodes_per_task: int = 6000
    #: demonstrate every generalist block of a scene, not only the one it was drawn for
    #: (:func:`retain_ros.demo.data.generate_demos`).
    pretrained_all_targets: bool = True
    #: demonstrations start up to this far (rad per joint) from ``HOME``
    #: (:func:`retain_ros.demo.data.generate_demos`).
    pretrained_start_spread: float = 1.0
    #: record this many random steps of each demonstration, 0 = all
    #: (:func:`retain_ros.demo.data.generate_demos`): fewer per demonstration, more scenes.
    pretrained_samples_per_demo: int = 1
    #: stage 2 (actions): steps, learning rate and batch size.
    pretrained_steps: int = 12000
    pretrained_lr: float = 1e-3
    pretrained_batch: int = 64
    #: stage 1, VLM pretraining (:func:`retain_ros.demo.pretraining.pretrain_vlm`): steps and
    #: learning rate of the pointing objective alone before any action is trained; 0 skips it.
    vlm_steps: int = 1500
    vlm_lr: float = 2e-3
    #: VLM layer whose image tokens point at the instructed block
    #: (:func:`retain_ros.demo.objectives.pointing_loss`); 0 = the last. The expert reads
    #: layer ``l``'s output from its layer ``l + 1`` on: pointing at layer 3 of 4 is what it
    #: learned to read (layers 1 and 2 much less or not at all, validation runs in the README).
    pointing_layer: int = 3
    #: keep the VLM (vision tower, projector, language model) fixed while the actions are
    #: trained, as knowledge insulation does: only the action expert and its projections learn.
    freeze_vlm: bool = True
    finetune_episodes: int = 48
    finetune_steps: int = 300
    finetune_lr: float = 1e-3
    finetune_batch: int = 32

    def recorded(self) -> Dict[str, object]:
        """Return every setting under its hashed key, the retired ones included."""
        out: Dict[str, object] = dict(RETIRED_SETTINGS)
        for field in fields(self):
            out[HASH_KEYS.get(field.name, field.name)] = getattr(self, field.name)
        return out

    def hashed(self) -> Dict[str, object]:
        """Return the settings that enter the hashes, under their hashed keys.

        All of :meth:`recorded`, except a setting of :data:`ADDED_SETTINGS` left at the value
        that reproduces what was made before it existed (so adding an option does not
        invalidate the shipped pretrained model).
        """
        neutral = {HASH_KEYS.get(name, name) for name, value in ADDED_SETTINGS.items()
                   if getattr(self, name) == value}
        return {k: v for k, v in self.recorded().items() if k not in neutral}

    def digest(self) -> str:
        """Return the hash of all hashed settings, :data:`FORMAT_VERSION` and the sim."""
        return json_digest({'format': FORMAT_VERSION, 'sim': sim_signature(), **self.hashed()})


#: Settings renamed since the shipped pretrained model was made -> their key in the hashes and in
#: ``demo_info.json`` (the hashed strings must not change).
HASH_KEYS: Dict[str, str] = {
    'pretrained_episodes_per_task': 'generalist_episodes_per_task',
    'pretrained_all_targets': 'generalist_all_targets',
    'pretrained_start_spread': 'generalist_start_spread',
    'pretrained_samples_per_demo': 'generalist_samples_per_demo',
    'pretrained_steps': 'generalist_steps',
    'pretrained_lr': 'generalist_lr',
    'pretrained_batch': 'generalist_batch',
    'vlm_steps': 'generalist_grounding_steps',
    'vlm_lr': 'generalist_grounding_lr',
    'pointing_layer': 'generalist_grounding_layer',
    'freeze_vlm': 'generalist_freeze_vlm',
}

#: Deleted options, hashed at the value every demo checkpoint is made with: the word tokenizer
#: (a byte tokenizer did not learn to ground the instruction), the default model width, the
#: pointing objective (a location-token answer was never read by the expert), no co-training
#: of that objective with flow matching, the pretrained model's statistics in the finetune.
RETIRED_SETTINGS: Dict[str, object] = {
    'tokenizer': 'word', 'model_hidden': 0, 'generalist_grounding_objective': 'point',
    'generalist_grounding_weight': 0.0, 'finetune_stats': 'generalist'}

#: Settings added after the shipped pretrained model was made, with their neutral values (those
#: that reproduce it): :meth:`TrainSettings.hashed` leaves them out at those values.
ADDED_SETTINGS: Dict[str, object] = {
    'pretrained_samples_per_demo': 0, 'vlm_steps': 0, 'vlm_lr': 2e-3, 'pointing_layer': 0,
    'freeze_vlm': False}


def sim_signature() -> Dict[str, object]:
    """Return the sim world's geometry constants: a change there makes checkpoints stale."""
    from retain_ros.sim import world

    out: Dict[str, object] = {}
    for name, value in sorted(vars(world).items()):
        # split-name lists are not scene content (their draws are keyed by the constants here)
        if name.isupper() and isinstance(value, (int, float, tuple, np.ndarray)) \
                and not name.endswith('_SPLITS'):
            out[name] = np.asarray(value).tolist()
    return out


def quick_settings() -> TrainSettings:
    """Return tiny settings for tests: seconds, not minutes (the policies learn nothing)."""
    return TrainSettings(pretrained_episodes_per_task=1, pretrained_steps=3, vlm_steps=2,
                         pretrained_batch=8, finetune_episodes=1, finetune_steps=2,
                         finetune_batch=8, demo_steps=4)


def pretrained_settings(settings: TrainSettings) -> Dict[str, object]:
    """Return the hashed settings that determine the pretrained model (all but ``finetune_*``)."""
    return {k: v for k, v in settings.hashed().items() if not k.startswith('finetune_')}


def pretrained_digest(settings: TrainSettings) -> str:
    """Return the hash of :func:`pretrained_settings`, :data:`FORMAT_VERSION` and the sim."""
    return json_digest({'format': FORMAT_VERSION, 'sim': sim_signature(),
                        **pretrained_settings(settings)})


def finetune_digest(settings: TrainSettings, pretrained_weights: str,
                    task: str = NEW_TASK) -> str:
    """Return the cache key of a finetune.

    :param settings: every setting enters (:meth:`TrainSettings.digest`).
    :param pretrained_weights: SHA-256 of the weights it starts from.
    :param task: its task; the instruction (the demonstrations' text) enters.
    """
    return short_sha256(f'{settings.digest()}:{pretrained_weights}:{get_task(task).instruction}')
