"""``retain-ros demo-train``: the demo generalist and its finetune (tiny pi0, CPU).

1. **generalist** (``--stage generalist``, ~20 min on 2 cores): the built-in tiny pi0 trained from
   scratch on scripted demonstrations of the generalist tasks (touch the red / blue / green /
   purple block) over the broad scene distribution (block positions, distractors, table colour,
   lighting), with a validation curve: first its VLM learns to point at the instructed block
   (:func:`pretrain_vlm`), then, the VLM frozen, the action expert learns the actions. One is
   SHIPPED in :data:`SHIPPED_GENERALIST` and used whenever the generalist settings are the
   defaults; ``--retrain-generalist`` trains it again;
2. **finetuned**: a full finetune of the generalist on the NEW task (touch the yellow block: a
   colour it never saw, in its own phrasing) from a few demonstrations in the narrow setting
   (``new_id``: one band in front of the arm, the yellow block and one distractor on its two
   sides in random order, default table and lighting), well under a minute;
3. optionally (``--continual ALPHA``) the continual chain: merge, finetune the merge on a second
   new task, merge again.

Checkpoints are written with :func:`retain_ros.policies.pi0.save_pi0_checkpoint` in LeRobot pi0
layout (``config.json``, ``model.safetensors``, normalizer files, ``tokenizer/``) under
:func:`retain_ros.demo.paths.demo_dir`, each with a ``demo_info.json`` (settings hash, data
digest, weights SHA-256); they are cached by those hashes.

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
from retain_ros.demo.rollout import SWEEP_ALPHAS
from retain_ros.demo.rollout import SWEEP_GROUP_SETTINGS
from retain_ros.demo.rollout import SWEEP_LANGUAGE_ONLY
from retain_ros.sim.tasks import CONTINUAL_SPLITS
from retain_ros.sim.tasks import GENERALIST_TASKS
from retain_ros.sim.tasks import get_task
from retain_ros.sim.tasks import SECOND_TASK
from retain_ros.sim.tasks import SPLITS
from retain_ros.sim.tasks import NEW_TASK
from retain_ros.sim.world import JOINT_NAMES

LOG = logging.getLogger(__name__)

#: Bump when the training code changes what it produces (invalidates cached checkpoints).
FORMAT_VERSION = 5     # 5: pointing VLM stage, frozen VLM, narrow sides at random
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
    #: ``word`` (one token per word of :data:`DEMO_WORDS`, as PaliGemma's tokenizer makes a
    #: colour one token) or ``byte`` (one token per byte: a colour is 3-6 tokens and the
    #: prompt 40, which the tiny model did not learn to ground in 12000 steps).
    tokenizer: str = 'word'
    #: depth of the tiny pi0's Gemma towers (the VLM and the action expert share it: their
    #: attention is joint); 0 keeps ``retain_tiny``'s 2.
    model_layers: int = 4
    #: hidden size of the Gemma towers and of SigLIP (MLP twice that); 0 keeps 64.
    model_hidden: int = 0
    #: SigLIP patch side (px); 0 keeps ``retain_tiny``'s 8 (16 image tokens at 32 px).
    model_patch: int = 0
    #: text tokens per prompt (word tokenizer: BOS + up to 7 words).
    tokenizer_max_length: int = 8
    #: a whole episode (:data:`retain_ros.demo.rollout.EPISODE_STEPS`): from a spread start pose
    #: the expert needs up to ~25 steps, and the rest teaches "stay on the block".
    demo_steps: int = 30
    noise_prob: float = 0.3
    noise_std: float = 0.15
    #: scenes per generalist task (each demonstrated once per block of a generalist colour).
    generalist_episodes_per_task: int = 6000
    generalist_all_targets: bool = True
    #: generalist demonstrations start up to this far (rad per joint) from ``HOME``
    #: (:func:`retain_ros.demo.data.generate_demos`).
    generalist_start_spread: float = 1.0
    #: record this many random steps of each generalist demonstration, 0 = all
    #: (:func:`retain_ros.demo.data.generate_demos`): fewer per demonstration, more scenes.
    generalist_samples_per_demo: int = 1
    #: share of generalist demonstrations that start with the gripper on ANOTHER block of the
    #: scene (being on a block is then no reason to stay).
    generalist_start_on_block: float = 0.0
    #: record only the steps on the way to the block (and 4 after), not the holding.
    generalist_motion_only: bool = False
    generalist_steps: int = 12000
    generalist_lr: float = 1e-3
    generalist_batch: int = 64
    #: stage 1, VLM pretraining (:func:`pretrain_vlm`): steps and learning rate of grounding
    #: alone before any action is trained; 0 skips it.
    generalist_grounding_steps: int = 1500
    generalist_grounding_lr: float = 2e-3
    #: VLM layer whose output the grounding answer is read from (:func:`grounding_loss`,
    #: :func:`pointing_loss`); 0 = the last. The expert reads layer ``l``'s output from its
    #: layer ``l + 1`` on: pointing at layer 3 of 4 is what it learned to read (layers 1 and 2
    #: much less or not at all, validation runs in the README).
    generalist_grounding_layer: int = 3
    #: what the VLM pretraining teaches: ``location`` (the instructed block's column and row as
    #: location tokens at the last text token, :func:`grounding_loss`) or ``point`` (mark the
    #: image token holding it, :func:`pointing_loss`).
    generalist_grounding_objective: str = 'point'
    #: weight of the grounding co-training loss (:func:`grounding_loss`) next to the flow
    #: matching loss while training the generalist (stage 2); 0 trains on flow matching alone.
    generalist_grounding_weight: float = 0.0
    #: keep the VLM (vision tower, projector, language model) fixed while the actions are
    #: trained, as knowledge insulation does: only the action expert and its projections learn.
    generalist_freeze_vlm: bool = True
    finetune_episodes: int = 48
    finetune_steps: int = 300
    finetune_lr: float = 1e-3
    finetune_batch: int = 32
    finetune_stats: str = 'generalist'

    def hashed(self) -> Dict[str, object]:
        """The settings that enter the hashes: all of them, except a setting of
        :data:`ADDED_SETTINGS` left at the value that reproduces what was made before it
        existed (so adding an option does not invalidate the shipped generalist)."""
        return {k: v for k, v in asdict(self).items()
                if k not in ADDED_SETTINGS or v != ADDED_SETTINGS[k]}

    def digest(self) -> str:
        """Hash of the settings and :data:`FORMAT_VERSION`."""
        blob = json.dumps({'format': FORMAT_VERSION, 'sim': _sim_signature(), **self.hashed()},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


#: Settings added after the shipped generalist was made, with their neutral values (those that
#: reproduce it): :meth:`TrainSettings.hashed` leaves them out at those values.
ADDED_SETTINGS: Dict[str, object] = {
    'model_patch': 0, 'generalist_samples_per_demo': 0, 'generalist_start_on_block': 0.0,
    'generalist_motion_only': False, 'generalist_grounding_steps': 0,
    'generalist_grounding_lr': 2e-3, 'generalist_grounding_layer': 0,
    'generalist_freeze_vlm': False, 'generalist_grounding_objective': 'location'}


def _sim_signature() -> Dict[str, object]:
    """The sim world's geometry constants: a change there makes cached checkpoints stale."""
    from retain_ros.sim import world

    out: Dict[str, object] = {}
    for name, value in sorted(vars(world).items()):
        # split-name lists are not scene content (their draws are keyed by the constants here)
        if name.isupper() and isinstance(value, (int, float, tuple, np.ndarray)) \
                and not name.endswith('_SPLITS'):
            out[name] = np.asarray(value).tolist()
    return out


def quick_settings() -> TrainSettings:
    """Tiny settings for tests: seconds, not minutes (the policies learn nothing useful)."""
    return TrainSettings(generalist_episodes_per_task=1, generalist_steps=3,
                         generalist_grounding_steps=2,
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
    over: Dict[str, object] = {}
    if settings.tokenizer == 'word':
        over['vocab_size'] = WORD_VOCAB_SIZE
    elif settings.tokenizer != 'byte':
        raise ValueError(f"tokenizer must be 'word' or 'byte', got {settings.tokenizer!r}")
    towers: Dict[str, Dict[str, int]] = {'text': {}, 'dit': {}}
    if settings.model_layers:
        for widths in towers.values():
            widths['num_hidden_layers'] = int(settings.model_layers)
    if settings.model_hidden:
        hidden = int(settings.model_hidden)
        towers['vision'] = {}
        for widths in towers.values():
            widths.update(hidden_size=hidden, intermediate_size=2 * hidden)
    if settings.model_patch:
        towers.setdefault('vision', {})['patch_size'] = int(settings.model_patch)
    over.update({name: widths for name, widths in towers.items() if widths})
    if over:
        cfg['model_overrides'] = over
    return pi0_config_from_dict(cfg)


#: The word tokenizer's vocabulary: the words of the sim's instructions and other common
#: instruction words, colours the generalist never trains on included (a pretrained tokenizer
#: knows words its robot data never used). Changing it changes every token id.
DEMO_WORDS = (
    'touch', 'reach', 'put', 'place', 'move', 'go', 'push', 'pick', 'point', 'tap', 'the', 'a',
    'an', 'to', 'on', 'onto', 'at', 'of', 'up', 'and', 'block', 'cube', 'box', 'gripper', 'arm',
    'hand', 'red', 'blue', 'green', 'purple', 'yellow', 'orange', 'pink', 'white', 'black',
    'brown', 'grey', 'cyan', 'left', 'right', 'near', 'far', 'please')
#: Image-space location bins per axis of the grounding answers (PaliGemma's ``<locNNNN>``
#: tokens, coarser): the instructed block's centre column is ``locx<i>``, its row ``locy<j>``.
GROUNDING_BINS = 16
LOCATION_WORDS = tuple(f'locx{i}' for i in range(GROUNDING_BINS)) + \
    tuple(f'locy{i}' for i in range(GROUNDING_BINS))
#: Text vocabulary size of the word tokenizer (specials + words; ``<image>`` has this id).
WORD_VOCAB_SIZE = 4 + len(DEMO_WORDS) + len(LOCATION_WORDS)


def build_tokenizer(settings: TrainSettings, work_dir: str):
    """The demo's tokenizer (:attr:`TrainSettings.tokenizer`), written to ``work_dir`` and
    loaded back from there, so checkpoints copy it into their ``tokenizer/``."""
    from retain_ros.policies.pi0.tokenizer_pi0 import build_byte_tokenizer
    from retain_ros.policies.pi0.tokenizer_pi0 import build_word_tokenizer
    from retain_ros.policies.pi0.tokenizer_pi0 import load_tokenizer
    from retain_ros.policies.pi0.tokenizer_pi0 import save_tokenizer

    tok = build_word_tokenizer(DEMO_WORDS + LOCATION_WORDS) if settings.tokenizer == 'word' \
        else build_byte_tokenizer()
    return load_tokenizer(save_tokenizer(tok, work_dir))


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
        self.grounding = grounding_bins(data.targets)

    def __len__(self) -> int:
        return int(self.states.shape[0])

    def batch(self, index: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Model inputs (and ``actions`` labels) for the samples ``index``."""
        which = self.instruction_index[index]
        pixels = self.images[index]
        return {'state': self.states[index], 'input_ids': self.input_ids[which],
                'attention_mask': self.attention_mask[which], 'pixel_values': pixels,
                'pixel_attention_mask': torch.ones(len(index), 1, dtype=torch.bool),
                'actions': self.actions[index], 'grounding': self.grounding[index]}


def grounding_bins(targets: np.ndarray) -> torch.Tensor:
    """``(N, 2)`` image-space bins (column, row) of block centres ``(N, 2)`` in metres."""
    from retain_ros.sim import world

    xy = np.asarray(targets, np.float64).reshape(-1, 2)
    u = (xy[:, 0] - world.VIEW_X[0]) / (world.VIEW_X[1] - world.VIEW_X[0])
    v = (world.VIEW_Y[1] - xy[:, 1]) / (world.VIEW_Y[1] - world.VIEW_Y[0])
    bins = np.clip(np.floor(np.stack([u, v], 1) * GROUNDING_BINS), 0, GROUNDING_BINS - 1)
    return torch.from_numpy(bins.astype(np.int64))


def _model_inputs(batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k != 'grounding'}


def flow_matching_loss(model, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    """pi0's training loss: MSE between predicted and true flow velocity (noise - actions)."""
    return model(**_model_inputs(batch)).loss


def location_token_ids(tokenizer) -> Tuple[torch.Tensor, torch.Tensor]:
    """Token ids of ``locx0..`` and ``locy0..`` (:data:`LOCATION_WORDS`)."""
    ids = [tokenizer.token_to_id(w) for w in LOCATION_WORDS]
    if None in ids:
        raise ValueError(f'the tokenizer has no location token {LOCATION_WORDS[ids.index(None)]!r}'
                         "; grounding co-training needs the 'word' tokenizer")
    return (torch.tensor(ids[:GROUNDING_BINS]), torch.tensor(ids[GROUNDING_BINS:]))


def _vlm_hidden(model, batch: Dict[str, torch.Tensor], layer: int = 0,
                use_cache: bool = False):
    """The VLM's hidden states ``(B, T, H)`` of the prefix (image tokens, then text) after
    layer ``layer`` (0: the last; earlier layers through the final norm, a "logit lens"), and
    the VLM output."""
    inner = model.model
    mask = batch['attention_mask']
    embeds = inner.embed_prefix(batch['input_ids'], batch['pixel_values'],
                                batch['pixel_attention_mask'])
    out = inner.vlm(inputs_embeds=embeds, attention_mask=mask, position_ids=mask.cumsum(-1) - 1,
                    token_type_ids=torch.zeros_like(mask), use_cache=use_cache,
                    output_hidden_states=bool(layer))
    if layer:
        return inner.vlm.language_model.norm(out.hidden_states[int(layer)]), out
    return out.last_hidden_state, out


def _grounding_logits(model, batch: Dict[str, torch.Tensor], x_ids: torch.Tensor,
                      y_ids: torch.Tensor, layer: int = 0, use_cache: bool = False):
    """Location-token logits ``(B, bins)`` for the column and the row, read at the last text
    token after VLM layer ``layer`` (0: the last layer), and the VLM output."""
    hidden, out = _vlm_hidden(model, batch, layer, use_cache)
    mask = batch['attention_mask']
    last = hidden[torch.arange(mask.shape[0]), mask.sum(-1) - 1]
    table = model.model.vlm.get_input_embeddings().weight
    return last @ table[x_ids].T, last @ table[y_ids].T, out


def grounding_loss(model, batch: Dict[str, torch.Tensor], x_ids: torch.Tensor,
                   y_ids: torch.Tensor, layer: int = 0):
    """The VLM's grounding loss and its prefix cache (for the flow-matching pass).

    PaliGemma-style location answers, as a VLM is pretrained to detect objects: the prefix
    (image + instruction) runs through the VLM once; from its last text token after VLM layer
    ``layer`` (0: the last; earlier layers through the final norm, a "logit lens"), the tied
    embedding (Gemma's LM head) scores the location tokens, and the cross-entropy against the
    instructed block's column (``locx*``) and row (``locy*``) bins is the loss. No parameter
    is added: the checkpoint stays a plain pi0.

    Why an earlier layer: the action expert attends to the VLM's keys and values of each layer,
    which are computed from the hidden states *entering* that layer; what only the last layer's
    output holds, the expert never sees.

    :return: ``(loss, cache)``; pass ``cache`` to the model to reuse the prefix.
    """
    x_logits, y_logits, out = _grounding_logits(model, batch, x_ids, y_ids, layer,
                                                use_cache=True)
    labels = batch['grounding']
    loss = torch.nn.functional.cross_entropy(x_logits, labels[:, 0]) + \
        torch.nn.functional.cross_entropy(y_logits, labels[:, 1])
    return loss, out.cache


def grounding_predictions(model, batch: Dict[str, torch.Tensor], x_ids: torch.Tensor,
                          y_ids: torch.Tensor, layer: int = 0) -> torch.Tensor:
    """``(B, 2)`` predicted (column, row) bins of the instructed block (argmax of the
    location tokens, read as :func:`grounding_loss` reads them)."""
    x_logits, y_logits, _ = _grounding_logits(model, batch, x_ids, y_ids, layer)
    return torch.stack([x_logits.argmax(-1), y_logits.argmax(-1)], 1)


def _share_of_hits(model, dataset: 'TensorDataset', hits, block: int = 256) -> float:
    """Share of ``dataset``'s samples for which ``hits(model, batch)`` (a ``(B,)`` bool
    tensor) holds, in eval mode without gradients; the training mode is restored."""
    was_training = model.training
    model.eval()
    count = 0
    with torch.no_grad():
        for start in range(0, len(dataset), block):
            batch = dataset.batch(torch.arange(start, min(len(dataset), start + block)))
            count += int(hits(model, batch).sum())
    model.train(was_training)
    return count / max(1, len(dataset))


def grounding_accuracy(model, dataset: 'TensorDataset', tokenizer, layer: int = 0) -> float:
    """Share of ``dataset``'s samples whose predicted block bins are both within one bin of the
    instructed block's (a bin is 1/16 of the view: 0.125 m across, 0.075 m deep)."""
    x_ids, y_ids = location_token_ids(tokenizer)
    return _share_of_hits(model, dataset, lambda m, batch: (
        grounding_predictions(m, batch, x_ids, y_ids, layer) - batch['grounding']).abs()
        .le(1).all(-1))


#: The word whose embedding asks an image token "is the instructed block here?"
#: (:func:`pointing_loss`).
POINT_WORD = 'point'


def _image_grid(model) -> int:
    """Image tokens per side (the SigLIP patch grid)."""
    vision = model.config.vlm_config.vision_config
    return int(vision.image_size) // int(vision.patch_size)


def pointing_logits(model, batch: Dict[str, torch.Tensor], point_id: int,
                    layer: int) -> torch.Tensor:
    """``(B, tokens)`` pointing scores of the image tokens after VLM layer ``layer``: each
    token's hidden state (through the final norm) against the embedding of ``point_id``."""
    hidden, _ = _vlm_hidden(model, batch, layer)
    table = model.model.vlm.get_input_embeddings().weight
    return hidden[:, :_image_grid(model) ** 2] @ table[int(point_id)]


def pointing_labels(model, grounding: torch.Tensor) -> torch.Tensor:
    """Index of the image token (row-major patch) holding each instructed block's centre,
    from its grounding bins."""
    grid = _image_grid(model)
    cells = grounding * grid // GROUNDING_BINS
    return cells[:, 1] * grid + cells[:, 0]


def pointing_loss(model, batch: Dict[str, torch.Tensor], point_id: int,
                  layer: int) -> torch.Tensor:
    """The VLM's pointing loss: cross-entropy over the image tokens, the label being the token
    that holds the instructed block.

    Where :func:`grounding_loss` asks the last text token for the block's coordinates, this
    marks the block's own image token, as referring-segmentation pretraining does. The action
    expert then has one thing to find in the prefix (the marked token; its content says where
    it is), the same for every instruction, instead of a colour-dependent choice between
    blocks. ``layer`` must be one the expert sees: it attends to the keys and values computed
    from the states *entering* each layer, so the output of layer ``l`` reaches it from layer
    ``l + 1`` on. No parameter is added.
    """
    return torch.nn.functional.cross_entropy(pointing_logits(model, batch, point_id, layer),
                                             pointing_labels(model, batch['grounding']))


def pointing_accuracy(model, dataset: 'TensorDataset', point_id: int, layer: int) -> float:
    """Share of ``dataset``'s samples whose highest-scoring image token holds the instructed
    block."""
    return _share_of_hits(model, dataset, lambda m, batch: (
        pointing_logits(m, batch, point_id, layer).argmax(-1)
        == pointing_labels(m, batch['grounding'])))


def grounding_objective(settings: 'TrainSettings', tokenizer):
    """``(loss_fn(model, batch), accuracy(model, dataset))`` of the VLM pretraining objective
    :attr:`TrainSettings.generalist_grounding_objective` at its layer."""
    layer = int(settings.generalist_grounding_layer)
    if settings.generalist_grounding_objective == 'point':
        point_id = tokenizer.token_to_id(POINT_WORD)
        if point_id is None:
            raise ValueError(f'the tokenizer has no {POINT_WORD!r} token; pointing needs the '
                             "'word' tokenizer")
        return (lambda model, batch: pointing_loss(model, batch, point_id, layer),
                lambda model, dataset: pointing_accuracy(model, dataset, point_id, layer))
    if settings.generalist_grounding_objective != 'location':
        raise ValueError(f'generalist_grounding_objective must be location or point, not '
                         f'{settings.generalist_grounding_objective!r}')
    x_ids, y_ids = location_token_ids(tokenizer)
    return (lambda model, batch: grounding_loss(model, batch, x_ids, y_ids, layer)[0],
            lambda model, dataset: grounding_accuracy(model, dataset, tokenizer, layer))


def cotraining_loss(weight: float, tokenizer, parts: Optional[Dict[str, float]] = None,
                    layer: int = 0):
    """``loss_fn`` for :func:`train_model`: flow matching + ``weight`` x grounding, the prefix
    computed once. ``parts`` (if given) receives the two terms of the last step."""
    x_ids, y_ids = location_token_ids(tokenizer)

    def loss_fn(model, batch):
        ground, cache = grounding_loss(model, batch, x_ids, y_ids, layer)
        flow = model(**_model_inputs(batch), cache=cache).loss
        if parts is not None:
            parts['flow'], parts['grounding'] = float(flow.detach()), float(ground.detach())
        return flow + float(weight) * ground

    return loss_fn


def train_model(model, dataset: TensorDataset, steps: int, lr: float, batch_size: int,
                seed: int, desc: str, progress: bool = True, on_step=None,
                loss_fn=flow_matching_loss) -> List[float]:
    """Train ``model`` in place with AdamW, linear warm-up and cosine decay.

    :param on_step: optional ``on_step(step, loss)`` after every step (1-based).
    :param loss_fn: ``loss_fn(model, batch)`` (default :func:`flow_matching_loss`).
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
        loss = loss_fn(model, dataset.batch(index))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(len(losses), losses[-1])
        if len(losses) % 20 == 0:
            bar.set_postfix(loss=f'{np.mean(losses[-20:]):.4f}')
    bar.close()
    model.eval()
    return losses


# ------------------------------------------------------------------------------ the pipeline
#: The shipped generalist (the "pretrained model a user downloads"): made once by
#: ``retain-ros demo-train --stage generalist`` with the default settings; its
#: ``demo_info.json`` holds the settings, their hash, the data digest and the training curve.
SHIPPED_GENERALIST = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'pretrained')
INFO_FILE = 'demo_info.json'
#: Scene seeds used to pick settings (model size, steps, alpha grid) and the validation curve;
#: the held-out seeds of the reported tables start at :data:`EVAL_SEED_OFFSET` (0), training
#: scenes at :data:`retain_ros.demo.data.TRAIN_SEED_OFFSET` (100000).
VALIDATION_SEED_OFFSET = 50_000


def generalist_settings(settings: TrainSettings) -> Dict[str, object]:
    """The settings that determine the generalist (all hashed ones but the ``finetune_*``)."""
    return {k: v for k, v in settings.hashed().items() if not k.startswith('finetune_')}


def generalist_digest(settings: TrainSettings) -> str:
    """Hash of :func:`generalist_settings` and :data:`FORMAT_VERSION` (and the sim geometry)."""
    blob = json.dumps({'format': FORMAT_VERSION, 'sim': _sim_signature(),
                       **generalist_settings(settings)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def data_digest(data: DemoData) -> str:
    """SHA-256 (first 16 hex digits) of a data set's arrays and instructions."""
    h = hashlib.sha256()
    for arr in (data.images, data.states, data.actions, data.instruction_index):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(json.dumps(data.instructions).encode())
    return h.hexdigest()[:16]


def file_sha256(path: str) -> str:
    """SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def _common(settings: TrainSettings) -> Dict[str, object]:
    return dict(horizon=settings.chunk_size, dt=settings.control_period,
                steps=settings.demo_steps, image_size=settings.sim_image_size,
                noise_prob=settings.noise_prob, noise_std=settings.noise_std)


def generalist_data(settings: TrainSettings, progress: bool = True) -> DemoData:
    """The generalist's training demonstrations (deterministic in the settings)."""
    n_gen = settings.generalist_episodes_per_task * len(GENERALIST_TASKS)
    with _progress_bar(n_gen, 'generalist demos', progress) as bar:
        return generate_demos(GENERALIST_TASKS, 'generalist',
                              settings.generalist_episodes_per_task, progress=bar.update,
                              all_targets=settings.generalist_all_targets,
                              start_spread=settings.generalist_start_spread,
                              samples_per_demo=settings.generalist_samples_per_demo,
                              start_on_block=settings.generalist_start_on_block,
                              motion_only=settings.generalist_motion_only, **_common(settings))


def _progress_bar(total: int, desc: str, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not progress, leave=False, file=sys.stderr,
                mininterval=1.0)


def _write_atomically(out_dir: str, write) -> None:
    """``write(staging_dir)``, then replace ``out_dir`` with it (a crash leaves the old one)."""
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix='.demo-train-', dir=parent)
    try:
        write(staging)
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _validation_rate(policy, episodes: int, image_size: int) -> float:
    """Closed-loop success on ``episodes`` generalist validation scenes (global RNG untouched)."""
    from retain_ros.demo.rollout import evaluate_split

    state = torch.get_rng_state()
    policy.module.eval()
    with torch.no_grad():
        results = evaluate_split(policy, 'generalist', episodes,
                                 seed_offset=VALIDATION_SEED_OFFSET, image_size=image_size)
    policy.module.train()
    torch.set_rng_state(state)
    return float(np.mean([r['success'] for r in results])) if results else 0.0


def plot_curve(curve: List[Dict], path: str, title: str,
               vlm_curve: Optional[List[Dict]] = None) -> None:
    """Training curves as a PNG: the VLM pretraining stage (grounding loss and validation
    grounding accuracy), when there is one, and the action stage (flow-matching loss,
    validation success and grounding)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    stages = [('VLM pretraining (grounding)', vlm_curve, 'grounding_loss')] if vlm_curve else []
    stages.append(('actions (flow matching)', curve, 'loss'))
    fig, axes = plt.subplots(1, len(stages), figsize=(5.5 * len(stages), 3.4), dpi=90,
                             squeeze=False)
    for ax, (name, points, key) in zip(axes[0], stages):
        ax.plot([c['step'] for c in points], [c[key] for c in points], color='tab:blue')
        ax.set_xlabel('step')
        ax.set_ylabel(key.replace('_', ' '), color='tab:blue')
        ax.set_title(name, fontsize=10)
        ax2 = ax.twinx()
        ax2.set_ylim(0, 1)
        ax2.set_ylabel('validation', color='tab:orange')
        for field, style, label in (('val_success', 'o-', 'closed-loop success'),
                                    ('val_grounding', 's--', 'grounding accuracy')):
            val = [(c['step'], c[field]) for c in points if c.get(field) is not None]
            if val:
                ax2.plot(*zip(*val), style, color='tab:orange', label=label, markersize=4)
        if ax2.get_legend_handles_labels()[0]:
            ax2.legend(loc='center right', fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def validation_samples(settings: TrainSettings, processor, scenes_per_task: int,
                       motion_only: bool = False) -> TensorDataset:
    """Model tensors of one sample per generalist demonstration on VALIDATION scenes (every
    block of a scene instructed in turn): the grounding checks, and with ``motion_only`` (a
    sample on the way to the block) the samples of :func:`probe_losses`."""
    data = generate_demos(GENERALIST_TASKS, 'generalist', scenes_per_task, all_targets=True,
                          start_spread=settings.generalist_start_spread, samples_per_demo=1,
                          motion_only=motion_only, seed_offset=VALIDATION_SEED_OFFSET,
                          **_common(settings))
    return TensorDataset(data, processor)


def pretrain_vlm(policy, dataset: TensorDataset, settings: TrainSettings,
                 checks: TensorDataset, check_every: int, progress: bool = True) -> List[Dict]:
    """Stage 1 of the generalist: pretrain the vision-language part on grounding alone.

    A real pi0 starts from PaliGemma, a VLM pretrained (among other things) to ground referring
    expressions; the action expert then learns to act on what the VLM already grounds. This is
    that stage for the tiny pi0, with the objective
    :attr:`TrainSettings.generalist_grounding_objective` (:func:`grounding_objective`) for
    ``generalist_grounding_steps`` steps at ``generalist_grounding_lr``:

    - ``point`` (default): mark the instructed block's image token at VLM layer 3
      (:func:`pointing_loss`); about 96% of validation samples marked right after 1000 steps.
      With the VLM then frozen, the expert learns to read the mark: the shipped generalist's
      loss grows x4 with the instructions shuffled.
    - ``location``: the block's column and row as location tokens at the last text token
      (:func:`grounding_loss`); 98% within one bin after 3000 steps, but in up to 10 000 steps
      of action training the expert never read it (instruction ratio x1.00).

    :return: the stage's curve: grounding loss every 100 steps, validation grounding accuracy
        (the objective's accuracy on ``checks``) every ``check_every`` steps and at the end.
    """
    steps = int(settings.generalist_grounding_steps)
    if steps <= 0:
        return []
    loss_fn, accuracy = grounding_objective(settings, policy.processor.tokenizer)
    curve: List[Dict] = []
    losses: List[float] = []

    def on_step(step: int, loss: float) -> None:
        losses.append(loss)
        if step % 100 == 0 or step == steps:
            point = {'step': step, 'grounding_loss': round(float(np.mean(losses[-100:])), 5)}
            if step % check_every == 0 or step == steps:
                point['val_grounding'] = accuracy(policy.module, checks)
                LOG.info('VLM pretraining step %d: grounding loss %.3f, validation grounding '
                         '%.2f', step, point['grounding_loss'], point['val_grounding'])
            curve.append(point)

    train_model(policy.module, dataset, steps, settings.generalist_grounding_lr,
                settings.generalist_batch, settings.seed + 2, 'pretrain VLM (grounding)',
                progress, on_step=on_step, loss_fn=loss_fn)
    return curve


def train_generalist(settings: TrainSettings, out_dir: str, progress: bool = True,
                     validate_every: int = 1000, validation_episodes: int = 24) -> Dict:
    """Stage 1: train the generalist from scratch and write it to ``out_dir``.

    With ``generalist_grounding_steps``, the VLM is first pretrained on grounding
    (:func:`pretrain_vlm`). Every ``validate_every`` steps and at the end the model runs
    ``validation_episodes`` closed-loop episodes
    on the VALIDATION seeds (never the held-out ones); loss and success go into the training
    curve (``demo_info.json`` and ``training_curve.png``).

    :return: the ``demo_info.json`` contents.
    """
    if settings.generalist_grounding_weight > 0 and \
            settings.generalist_grounding_objective != 'location':
        # before any data or training: the combination cannot run
        raise ValueError('grounding co-training (generalist_grounding_weight) reads the '
                         "location objective; set generalist_grounding_objective to "
                         "'location' or the weight to 0")
    t0 = time.perf_counter()
    torch.manual_seed(settings.seed)
    np.random.seed(settings.seed)
    spec = build_spec(settings)
    data = generalist_data(settings, progress)
    digest = data_digest(data)
    stats = compute_stats(data, 'demo generalist training data')
    work = tempfile.mkdtemp(prefix='.demo-tokenizer-')
    try:
        policy = _pi0().Pi0Policy.from_spec(spec, build_tokenizer(settings, work), stats,
                                            init_weights=True, init_seed=settings.seed,
                                            noise_seed=settings.seed)
        dataset = TensorDataset(data, policy.processor)
        n_samples, n_episodes = len(data), data.episodes
        del data
        grounds = settings.generalist_grounding_steps > 0 or \
            settings.generalist_grounding_weight > 0
        checks = validation_samples(settings, policy.processor, 60) if grounds else None
        accuracy = grounding_objective(settings, policy.processor.tokenizer)[1] \
            if grounds else None
        probe_set = validation_samples(settings, policy.processor, 20, motion_only=True)
        vlm_curve = pretrain_vlm(policy, dataset, settings, checks, validate_every, progress)
        curve: List[Dict] = []
        losses: List[float] = []
        grounding: List[float] = []
        parts: Dict[str, float] = {}
        loss_fn = flow_matching_loss
        if settings.generalist_grounding_weight > 0:
            loss_fn = cotraining_loss(settings.generalist_grounding_weight,
                                      policy.processor.tokenizer, parts,
                                      settings.generalist_grounding_layer)

        def on_step(step: int, loss: float) -> None:
            losses.append(parts.get('flow', loss))
            if parts:
                grounding.append(parts['grounding'])
            last = step == settings.generalist_steps
            if step % 100 == 0 or last:
                point = {'step': step, 'loss': round(float(np.mean(losses[-100:])), 5)}
                if grounding:
                    point['grounding_loss'] = round(float(np.mean(grounding[-100:])), 5)
                if validate_every and (step % validate_every == 0 or last):
                    point['val_success'] = _validation_rate(policy, validation_episodes,
                                                            settings.sim_image_size)
                    probe = probe_losses(policy.module, probe_set, settings.seed, repeats=2)
                    point['val_instruction_ratio'] = round(
                        probe['shuffled_instruction'] / probe['loss'], 4)
                    if checks is not None:
                        point['val_grounding'] = accuracy(policy.module, checks)
                    LOG.info('generalist step %d: loss %.4f, validation success %.2f, '
                             'loss with instructions shuffled x%.3f, grounding %s', step,
                             point['loss'], point['val_success'],
                             point['val_instruction_ratio'], point.get('val_grounding'))
                curve.append(point)

        if settings.generalist_freeze_vlm:
            for name, param in policy.module.named_parameters():
                if name.startswith('model.vlm.'):
                    param.requires_grad_(False)
        t1 = time.perf_counter()
        train_model(policy.module, dataset, settings.generalist_steps, settings.generalist_lr,
                    settings.generalist_batch, settings.seed, 'train generalist', progress,
                    on_step=on_step, loss_fn=loss_fn)
        t2 = time.perf_counter()
        for param in policy.module.parameters():
            param.requires_grad_(True)
        info = {'role': 'generalist', 'settings': generalist_settings(settings),
                'hash': generalist_digest(settings), 'format': FORMAT_VERSION,
                'data_digest': digest, 'samples': int(n_samples), 'episodes': int(n_episodes),
                'generalist_tasks': GENERALIST_TASKS,
                'validation': {'seed_offset': VALIDATION_SEED_OFFSET,
                               'episodes': validation_episodes},
                **({'vlm_curve': vlm_curve} if vlm_curve else {}), 'curve': curve,
                'seconds': {'data': round(t1 - t0, 1), 'training': round(t2 - t1, 1)},
                'torch': torch.__version__, 'created': time.strftime('%Y-%m-%dT%H:%M:%S'),
                'command': 'retain-ros demo-train --stage generalist'}

        def write(staging: str) -> None:
            _pi0().save_pi0_checkpoint(policy, staging, stats)
            info['weights_sha256'] = file_sha256(os.path.join(staging, 'model.safetensors'))
            with open(os.path.join(staging, INFO_FILE), 'w', encoding='utf-8') as f:
                json.dump(info, f, indent=2)
            plot_curve(curve, os.path.join(staging, 'training_curve.png'),
                       f'demo generalist ({settings.generalist_grounding_steps} + '
                       f'{settings.generalist_steps} steps)', vlm_curve)

        _write_atomically(out_dir, write)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    LOG.info('generalist written to %s in %.0f s', out_dir, time.perf_counter() - t0)
    return info


def read_info(checkpoint: str) -> Optional[Dict]:
    """A demo checkpoint's ``demo_info.json``, or None."""
    try:
        with open(os.path.join(checkpoint, INFO_FILE), encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _generalist_matches(path: str, settings: TrainSettings) -> bool:
    info = read_info(path) if checkpoint_complete(path) else None
    return bool(info) and info.get('hash') == generalist_digest(settings)


def ensure_generalist(root: str, settings: TrainSettings, retrain: bool = False,
                      progress: bool = True) -> Tuple[str, str]:
    """``root/generalist``: the shipped generalist (copied) when the settings are the ones it
    was made with, else one trained here (cached by settings hash).

    :return: ``(path, origin)`` with origin ``shipped``, ``cached`` or ``trained``.
    """
    path = os.path.join(root, GENERALIST)
    if not retrain and _generalist_matches(SHIPPED_GENERALIST, settings):
        shipped = read_info(SHIPPED_GENERALIST)
        here = read_info(path) if checkpoint_complete(path) else None
        if not here or here.get('weights_sha256') != shipped.get('weights_sha256'):
            _write_atomically(path, lambda d: shutil.copytree(SHIPPED_GENERALIST, d,
                                                              dirs_exist_ok=True))
        LOG.info('generalist: the shipped one (%s)', SHIPPED_GENERALIST)
        return path, 'shipped'
    if not retrain and _generalist_matches(path, settings):
        return path, 'cached'
    LOG.info('training the generalist (%s)', 'requested' if retrain else
             'the settings differ from the shipped one')
    train_generalist(settings, path, progress=progress)
    return path, 'trained'


def train_finetune(settings: TrainSettings, generalist_dir: str, out_dir: str,
                   progress: bool = True, task: str = NEW_TASK) -> Dict:
    """Stage 2: full finetune of the checkpoint ``generalist_dir`` on ``task`` from
    ``finetune_episodes`` narrow demonstrations; written to ``out_dir``.

    :return: the finetuned checkpoint's ``demo_info.json`` contents.
    """
    from retain_ros.policies.loader import load_policy

    t0 = time.perf_counter()
    torch.manual_seed(settings.seed)
    policy = load_policy(generalist_dir, device='cpu', dtype='float32',
                         noise_seed=settings.seed, warmup=False)
    narrow = get_task(task).splits()[0]
    with _progress_bar(settings.finetune_episodes, 'finetune demos', progress) as bar:
        data = generate_demos([task], narrow, settings.finetune_episodes,
                              progress=bar.update, **_common(settings))
    stats = compute_stats(data, 'demo finetune training data') \
        if settings.finetune_stats == 'own' else policy.processor.stats
    policy.processor = _pi0().Pi0Processor(policy.spec, policy.processor.tokenizer, stats)
    dataset = TensorDataset(data, policy.processor)
    losses = train_model(policy.module, dataset, settings.finetune_steps, settings.finetune_lr,
                         settings.finetune_batch, settings.seed + 1, f'finetune {task}',
                         progress)
    base = read_info(generalist_dir) or {}
    info = {'role': 'finetuned', 'task': task, 'settings': asdict(settings),
            'hash': finetune_digest(settings, base.get('weights_sha256', ''), task),
            'format': FORMAT_VERSION, 'generalist': base.get('hash'),
            'generalist_weights_sha256': base.get('weights_sha256'),
            'data_digest': data_digest(data), 'samples': len(dataset),
            'final_loss': float(np.mean(losses[-50:])) if losses else None,
            'seconds': round(time.perf_counter() - t0, 1),
            'created': time.strftime('%Y-%m-%dT%H:%M:%S')}

    def write(staging: str) -> None:
        _pi0().save_pi0_checkpoint(policy, staging, stats)
        with open(os.path.join(staging, INFO_FILE), 'w', encoding='utf-8') as f:
            json.dump(info, f, indent=2)

    _write_atomically(out_dir, write)
    return info


def finetune_digest(settings: TrainSettings, generalist_weights: str,
                    task: str = NEW_TASK) -> str:
    """Cache key of the finetune: every setting, the generalist's weights hash and the task's
    instruction (the demonstrations' text)."""
    key = f'{settings.digest()}:{generalist_weights}:{get_task(task).instruction}'
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def ensure_demo_checkpoints(root: Optional[str] = None,
                            settings: Optional[TrainSettings] = None,
                            force: bool = False, progress: bool = True,
                            retrain_generalist: bool = False) -> Tuple[str, str]:
    """The demo's generalist (shipped, cached or trained) and its finetune (trained unless
    an up-to-date one exists).

    :param force: retrain the finetune.
    :param retrain_generalist: train the generalist here instead of using the shipped one.
    :return: ``(generalist_dir, finetuned_dir)``.
    """
    root = demo_dir(root)
    settings = settings or TrainSettings()
    torch.set_num_threads(2)
    generalist, origin = ensure_generalist(root, settings, retrain=retrain_generalist,
                                           progress=progress)
    finetuned = os.path.join(root, FINETUNED)
    weights = (read_info(generalist) or {}).get('weights_sha256', '')
    info = read_info(finetuned) if checkpoint_complete(finetuned) else None
    if force or origin == 'trained' or not info or \
            info.get('hash') != finetune_digest(settings, weights):
        train_finetune(settings, generalist, finetuned, progress=progress)
    else:
        LOG.info('finetuned checkpoint up to date in %s', finetuned)
    return generalist, finetuned


# ------------------------------------------------------------------------------- evaluation
#: The offline sweep: the ROS demo's settings (:data:`retain_ros.demo.rollout.SWEEP_ALPHAS`,
#: the language-only merge, the per-group settings).
DEFAULT_SWEEP = tuple({'alpha': a} for a in SWEEP_ALPHAS) + \
    ({'alpha': 1.0, 'language': SWEEP_LANGUAGE_ONLY},) + SWEEP_GROUP_SETTINGS
#: Scene seeds of the offline sweep start here (training scenes use
#: :data:`retain_ros.demo.data.TRAIN_SEED_OFFSET` and up).
EVAL_SEED_OFFSET = 0


def offline_sweep(root: str, episodes: int, settings: TrainSettings, progress: bool = True,
                  sweep=DEFAULT_SWEEP, seed_offset: int = EVAL_SEED_OFFSET) -> List[Dict]:
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
        rows = alpha_sweep(policy, merger, sweep, splits, seed_offset=seed_offset,
                           progress=b.update, image_size=settings.sim_image_size)
    print(format_sweep(rows))
    print(f'({episodes} episodes per cell; 95% Wilson interval in brackets; '
          f'{time.perf_counter() - t0:.0f} s)')
    return rows


#: Checkpoint directories of the continual chain under the demo directory.
MERGED_1 = 'merged_1'
FINETUNED_2 = 'finetuned_2'


def continual_chain(root: str, settings: TrainSettings, alpha: float, episodes: int,
                    generalist: str, finetuned: str, progress: bool = True) -> List[Dict]:
    """RETAIN's continual recipe on the demo: a second new task on top of the first merge.

    1. ``merged_1`` = (1 - alpha) * generalist + alpha * finetuned (the first new task), written
       with :func:`retain_ros.merging.to_disk.merge_to_disk`;
    2. ``finetuned_2`` = a full finetune of ``merged_1`` on the second new task
       (:data:`~retain_ros.sim.tasks.SECOND_TASK`) from its narrow demos;
    3. the chain ``(1 - alpha) * merged_1 + alpha * finetuned_2``, evaluated (held-out seeds)
       next to ``merged_1`` (alpha 0) and ``finetuned_2`` (alpha 1) on the generalist tasks and
       both new tasks' in-distribution and OOD splits.

    :param generalist: the generalist checkpoint (from :func:`ensure_demo_checkpoints`).
    :param finetuned: its finetune on the first new task.
    :return: the sweep rows (setting ``alpha`` = weight on ``finetuned_2``).
    """
    from retain_ros.demo.rollout import alpha_sweep
    from retain_ros.demo.rollout import load_pair
    from retain_ros.merging.spec import MergeSpec
    from retain_ros.merging.to_disk import merge_to_disk

    merged = os.path.join(root, MERGED_1)
    merge_to_disk(generalist, finetuned, MergeSpec(alpha=float(alpha)), merged, progress=False)
    second = os.path.join(root, FINETUNED_2)
    train_finetune(settings, merged, second, progress=progress, task=SECOND_TASK)
    policy, merger = load_pair(merged, second, noise_seed=settings.seed)
    splits = {s: episodes for s in SPLITS + CONTINUAL_SPLITS}
    sweep = ({'alpha': 0.0}, {'alpha': float(alpha)}, {'alpha': 1.0})
    with _progress_bar(len(sweep) * len(splits) * episodes, 'continual chain', progress) as b:
        rows = alpha_sweep(policy, merger, sweep, splits, seed_offset=EVAL_SEED_OFFSET,
                           progress=b.update, image_size=settings.sim_image_size)
    print(f'continual chain: merged_1 = {alpha:g} on the first finetune; rows: alpha on '
          f'finetuned_2 (0 = merged_1, 1 = finetuned_2)')
    print(format_sweep(rows))
    return rows


#: Inputs :func:`probe_losses` shuffles across samples, and the batch keys of each.
PROBE_INPUTS = {'instruction': ('input_ids', 'attention_mask'), 'image': ('pixel_values',),
                'state': ('state',)}


def probe_losses(model, dataset: TensorDataset, seed: int, repeats: int = 5) -> Dict[str, float]:
    """What a policy's actions depend on: its flow-matching loss on ``dataset``, and the same
    loss with one input (instruction, image or state) shuffled across the samples.

    A policy that follows the instruction loses accuracy when the instructions are shuffled;
    equal losses mean its actions do not depend on that input, whatever its success rate.
    Same noise and flow times for every variant; the global RNG and the module's training mode
    are left as they were.

    :return: ``{'samples', 'loss', 'shuffled_instruction', 'shuffled_image',
        'shuffled_state'}``.
    """
    batch = dataset.batch(torch.arange(len(dataset)))
    perm = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(1))
    rng, was_training = torch.get_rng_state(), model.training
    model.eval()

    def loss(inputs: Dict[str, torch.Tensor]) -> float:
        torch.manual_seed(seed)
        with torch.no_grad():
            return float(np.mean([float(flow_matching_loss(model, inputs))
                                  for _ in range(repeats)]))

    out = {'samples': len(dataset), 'loss': loss(batch)}
    for name, keys in PROBE_INPUTS.items():
        out[f'shuffled_{name}'] = loss(dict(batch, **{k: batch[k][perm] for k in keys}))
    torch.set_rng_state(rng)
    model.train(was_training)
    return out


def conditioning_probe(checkpoint: str, settings: TrainSettings,
                       scenes_per_task: int = 40) -> Dict[str, float]:
    """:func:`probe_losses` of a checkpoint on :func:`validation_samples` (one sample on the
    way to the block per demonstration) of ``scenes_per_task`` generalist scenes per task."""
    from retain_ros.policies.loader import load_policy

    policy = load_policy(checkpoint, device='cpu', dtype='float32', noise_seed=settings.seed,
                         warmup=False)
    samples = validation_samples(settings, policy.processor, scenes_per_task, motion_only=True)
    return probe_losses(policy.module, samples, settings.seed)


def format_probe(name: str, probe: Dict[str, float]) -> str:
    """One line: the loss and each shuffled input's loss as a ratio to it."""
    ratios = ', '.join(f'{k[len("shuffled_"):]} shuffled x{probe[k] / probe["loss"]:.2f}'
                       for k in probe if k.startswith('shuffled_'))
    return f'{name}: flow loss {probe["loss"]:.4f} on {probe["samples"]} samples; {ratios}'


def format_sweep(rows: List[Dict]) -> str:
    """Plain-text table: one line per setting, success rate (and 95% Wilson interval) per
    split."""
    from retain_ros.evaluation.stats import wilson_interval

    splits = []
    for row in rows:
        if row['split'] not in splits:
            splits.append(row['split'])
    width = 24
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
    p.add_argument('--stage', choices=('all', 'generalist'), default='all',
                   help='all (default): the generalist (shipped unless the settings differ) '
                        'and its finetune; generalist: train only the generalist, into --out')
    p.add_argument('--out', default=None,
                   help='--stage generalist: output checkpoint directory (default '
                        'DIR/generalist; retain_ros/demo/pretrained rebuilds the shipped one)')
    p.add_argument('--retrain-generalist', action='store_true',
                   help='train the generalist here instead of using the shipped one')
    p.add_argument('--force', action='store_true', help='retrain the finetune even when up to '
                   'date')
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
    p.add_argument('--seeds', choices=('heldout', 'validation'), default='heldout',
                   help='scene seeds of --eval: heldout (from 0; the reported tables) or '
                        'validation (from 50000; for choosing settings)')
    p.add_argument('--continual', type=float, default=None, metavar='ALPHA',
                   help='then run the continual chain with this alpha: merge, finetune the '
                        'merge on a second new task (touch the cyan block), merge again, and '
                        'evaluate --eval episodes (default 20) per split on held-out seeds')
    p.add_argument('--probe', nargs='*', metavar='CHECKPOINT', default=None,
                   help='what the policies act on: flow loss on validation samples with the '
                        'instruction, the image or the state shuffled across samples, on '
                        'generalist scenes (default: the demo generalist and its finetune); '
                        'no training')
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
    if args.continual is not None and not 0.0 <= args.continual <= 1.0:
        raise SystemExit(f'--continual {args.continual}: alpha must be in [0, 1]')
    if args.probe is not None:
        generalist = os.path.join(root, GENERALIST)
        paths = args.probe or [generalist if checkpoint_complete(generalist)
                               else SHIPPED_GENERALIST, os.path.join(root, FINETUNED)]
        for path in paths:
            if not checkpoint_complete(path):
                print(f'{path}: no checkpoint, skipped')
                continue
            print(format_probe(f'{path} (generalist scenes)',
                               conditioning_probe(path, settings)))
        return 0
    if args.stage == 'generalist':
        out = args.out or os.path.join(root, GENERALIST)
        info = train_generalist(settings, out, progress=progress)
        last = info['curve'][-1] if info['curve'] else {}
        print(f'generalist: {out} (settings hash {info["hash"]}, data digest '
              f'{info["data_digest"]}); trained in {info["seconds"]["training"]:.0f} s; final '
              f'loss {last.get("loss")}, validation success {last.get("val_success")}')
        return 0
    generalist, finetuned = ensure_demo_checkpoints(
        root, settings, force=args.force, progress=progress,
        retrain_generalist=args.retrain_generalist)
    ft = read_info(finetuned) or {}
    print(f'generalist: {generalist}\nfinetuned:  {finetuned} (final loss '
          f'{ft.get("final_loss")})')
    if args.eval and args.continual is None:
        offset = VALIDATION_SEED_OFFSET if args.seeds == 'validation' else EVAL_SEED_OFFSET
        rows = offline_sweep(root, args.eval, settings, progress=progress, seed_offset=offset)
        print(f'(scene seeds: {args.seeds}, from {offset})')
        with open(os.path.join(root, 'offline_sweep.json'), 'w', encoding='utf-8') as f:
            json.dump(rows, f, indent=2)
    if args.continual is not None:
        rows = continual_chain(root, settings, args.continual, args.eval or 20, generalist,
                               finetuned, progress)
        with open(os.path.join(root, 'continual.json'), 'w', encoding='utf-8') as f:
            json.dump(rows, f, indent=2)
    return 0
