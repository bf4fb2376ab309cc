"""Where the demo checkpoints live.

``$RETAIN_ROS_DEMO_DIR`` or ``~/.cache/retain_ros/demo``; inside it ``generalist/`` (the
pretrained tiny pi0) and ``finetuned/`` (its finetune on the new task), both in LeRobot pi0
layout, each with a ``demo_info.json`` (its settings hash, data digest and weights SHA-256,
for caching; see :mod:`retain_ros.demo.train`).
"""
from __future__ import annotations

import logging
import os
from typing import Optional
from typing import Tuple

LOG = logging.getLogger(__name__)

ENV_VAR = 'RETAIN_ROS_DEMO_DIR'
GENERALIST = 'generalist'
FINETUNED = 'finetuned'
#: Files a finished checkpoint directory must hold.
REQUIRED_FILES = ('config.json', 'model.safetensors')


class DemoCheckpointsMissing(FileNotFoundError):
    """The demo checkpoints have not been trained yet."""


def demo_dir(root: Optional[str] = None) -> str:
    """Directory of the demo checkpoints.

    :param root: explicit directory; default ``$RETAIN_ROS_DEMO_DIR`` or
        ``~/.cache/retain_ros/demo``.
    :return: an absolute path (not created).
    """
    path = root or os.environ.get(ENV_VAR) or os.path.join('~', '.cache', 'retain_ros', 'demo')
    return os.path.abspath(os.path.expanduser(path))


def checkpoint_complete(path: str) -> bool:
    """Whether ``path`` holds a finished checkpoint (config and weights)."""
    return all(os.path.isfile(os.path.join(path, name)) for name in REQUIRED_FILES)


def demo_checkpoints(create: bool = False, root: Optional[str] = None) -> Tuple[str, str]:
    """Paths of the demo generalist and finetuned checkpoints.

    :param create: train them (``retain-ros demo-train`` with default settings) when they are
        missing or stale, instead of raising.
    :param root: explicit demo directory (default :func:`demo_dir`).
    :return: ``(generalist_dir, finetuned_dir)``.
    :raises DemoCheckpointsMissing: when missing and ``create`` is false.
    """
    base = demo_dir(root)
    generalist = os.path.join(base, GENERALIST)
    finetuned = os.path.join(base, FINETUNED)
    if create:
        from retain_ros.demo.train import ensure_demo_checkpoints
        return ensure_demo_checkpoints(root=base)
    missing = [p for p in (generalist, finetuned) if not checkpoint_complete(p)]
    if missing:
        raise DemoCheckpointsMissing(
            f'demo checkpoints missing: {", ".join(missing)}; run `retain-ros demo-train` first '
            f'(they go to ${ENV_VAR} or ~/.cache/retain_ros/demo)')
    return generalist, finetuned
