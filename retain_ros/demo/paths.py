"""Where the demo checkpoints live.

The demo directory is ``$RETAIN_ROS_DEMO_DIR`` or ``~/.cache/retain_ros/demo``; inside it
``generalist/`` holds the pretrained tiny pi0 (:data:`PRETRAINED`: the directory keeps its first
name, which users' caches and the README use) and ``finetuned/`` its finetune on the new task,
both in LeRobot pi0 layout, each with a ``demo_info.json`` (its settings hash, data digest and
weights SHA-256, for caching; see :mod:`retain_ros.demo.pipeline`). The pretrained model
shipped with the package is :data:`SHIPPED_PRETRAINED`.
"""
from __future__ import annotations

import os
from typing import Optional
from typing import Tuple

ENV_VAR = 'RETAIN_ROS_DEMO_DIR'
#: Directory name of the pretrained model under the demo directory.
PRETRAINED = 'generalist'
#: Directory name of its finetune on the new task.
FINETUNED = 'finetuned'
#: Files a finished checkpoint directory must hold.
REQUIRED_FILES = ('config.json', 'model.safetensors')
#: The shipped pretrained model (the "pretrained model a user downloads"): made once by
#: ``retain-ros demo-train --stage pretrained`` with the default settings; its
#: ``demo_info.json`` holds the settings, their hash, the data digest and the training curve.
SHIPPED_PRETRAINED = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'pretrained')


class DemoCheckpointsMissing(FileNotFoundError):
    """The demo checkpoints have not been trained yet."""


def demo_dir(root: Optional[str] = None) -> str:
    """Return the directory of the demo checkpoints.

    :param root: explicit directory; default ``$RETAIN_ROS_DEMO_DIR`` or
        ``~/.cache/retain_ros/demo``.
    :return: an absolute path (not created).
    """
    path = root or os.environ.get(ENV_VAR) or os.path.join('~', '.cache', 'retain_ros', 'demo')
    return os.path.abspath(os.path.expanduser(path))


def checkpoint_complete(path: str) -> bool:
    """Return whether ``path`` holds a finished checkpoint (config and weights)."""
    return all(os.path.isfile(os.path.join(path, name)) for name in REQUIRED_FILES)


def demo_checkpoints(create: bool = False, root: Optional[str] = None) -> Tuple[str, str]:
    """Return the paths of the demo pretrained and finetuned checkpoints.

    :param create: train them (``retain-ros demo-train`` with default settings) when they are
        missing or stale, instead of raising.
    :param root: explicit demo directory (default :func:`demo_dir`).
    :return: ``(pretrained_dir, finetuned_dir)``.
    :raises DemoCheckpointsMissing: when missing and ``create`` is false.
    """
    base = demo_dir(root)
    pretrained = os.path.join(base, PRETRAINED)
    finetuned = os.path.join(base, FINETUNED)
    if create:
        from retain_ros.demo.pipeline import ensure_demo_checkpoints
        return ensure_demo_checkpoints(root=base)
    missing = [p for p in (pretrained, finetuned) if not checkpoint_complete(p)]
    if missing:
        raise DemoCheckpointsMissing(
            f'demo checkpoints missing: {", ".join(missing)}; run `retain-ros demo-train` first '
            f'(they go to ${ENV_VAR} or ~/.cache/retain_ros/demo)')
    return pretrained, finetuned
