"""The demo checkpoints, made or reused: the pretrained model and its finetune.

:func:`ensure_demo_checkpoints` is what ``retain-ros demo-train`` and ``retain-ros demo`` call:

1. the pretrained model (:func:`ensure_pretrained`): the shipped one
   (:data:`~retain_ros.demo.paths.SHIPPED_PRETRAINED`, copied) while the settings are the ones
   it was made with, else one trained here (:func:`~retain_ros.demo.pretraining.train_pretrained`),
   cached by its settings hash;
2. its finetune on the new task (:func:`~retain_ros.demo.finetuning.train_finetune`), cached by
   :func:`~retain_ros.demo.settings.finetune_digest` (every setting, the pretrained weights and
   the task).

Both go to :func:`~retain_ros.demo.paths.demo_dir` in LeRobot pi0 layout, each with its
``demo_info.json`` (:mod:`retain_ros.demo.checkpoints`).
"""
from __future__ import annotations

import logging
import os
import shutil
from typing import Optional
from typing import Tuple

from retain_ros.demo.checkpoints import read_info
from retain_ros.demo.checkpoints import write_atomically
from retain_ros.demo.finetuning import train_finetune
from retain_ros.demo.paths import checkpoint_complete
from retain_ros.demo.paths import demo_dir
from retain_ros.demo.paths import FINETUNED
from retain_ros.demo.paths import PRETRAINED
from retain_ros.demo.paths import SHIPPED_PRETRAINED
from retain_ros.demo.pretraining import train_pretrained
from retain_ros.demo.settings import finetune_digest
from retain_ros.demo.settings import pretrained_digest
from retain_ros.demo.settings import TrainSettings

LOG = logging.getLogger(__name__)


def _made_with(path: str, settings: TrainSettings) -> bool:
    """Return whether ``path`` holds a pretrained model made with ``settings``."""
    info = read_info(path) if checkpoint_complete(path) else None
    return bool(info) and info.get('hash') == pretrained_digest(settings)


def ensure_pretrained(root: str, settings: TrainSettings, retrain: bool = False,
                      progress: bool = True) -> Tuple[str, str]:
    """Return the pretrained model in ``root``, copied, reused or trained.

    :param retrain: train it here even when the shipped or a cached one fits.
    :return: ``(path, origin)`` with origin ``shipped``, ``cached`` or ``trained``.
    """
    path = os.path.join(root, PRETRAINED)
    if not retrain and _made_with(SHIPPED_PRETRAINED, settings):
        shipped = read_info(SHIPPED_PRETRAINED)
        here = read_info(path) if checkpoint_complete(path) else None
        if not here or here.get('weights_sha256') != shipped.get('weights_sha256'):
            write_atomically(path, lambda d: shutil.copytree(SHIPPED_PRETRAINED, d,
                                                             dirs_exist_ok=True))
        LOG.info('pretrained model: the shipped one (%s)', SHIPPED_PRETRAINED)
        return path, 'shipped'
    if not retrain and _made_with(path, settings):
        return path, 'cached'
    LOG.info('training the pretrained model (%s)', 'requested' if retrain else
             'the settings differ from the shipped one')
    train_pretrained(settings, path, progress=progress)
    return path, 'trained'


def ensure_demo_checkpoints(root: Optional[str] = None,
                            settings: Optional[TrainSettings] = None,
                            force: bool = False, progress: bool = True,
                            retrain_pretrained: bool = False) -> Tuple[str, str]:
    """Return the demo's pretrained model and its finetune, trained where needed.

    :param root: the demo directory (default :func:`~retain_ros.demo.paths.demo_dir`).
    :param settings: default :class:`TrainSettings`.
    :param force: retrain the finetune.
    :param retrain_pretrained: train the pretrained model here instead of using the shipped one.
    :return: ``(pretrained_dir, finetuned_dir)``.
    """
    root = demo_dir(root)
    settings = settings or TrainSettings()
    pretrained, origin = ensure_pretrained(root, settings, retrain=retrain_pretrained,
                                           progress=progress)
    finetuned = os.path.join(root, FINETUNED)
    weights = (read_info(pretrained) or {}).get('weights_sha256', '')
    info = read_info(finetuned) if checkpoint_complete(finetuned) else None
    if force or origin == 'trained' or not info or \
            info.get('hash') != finetune_digest(settings, weights):
        train_finetune(settings, pretrained, finetuned, progress=progress)
    else:
        LOG.info('finetuned checkpoint up to date in %s', finetuned)
    return pretrained, finetuned
