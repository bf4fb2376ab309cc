"""Demo checkpoint files: ``demo_info.json`` and atomic writes of a checkpoint directory.

A demo checkpoint is a LeRobot pi0 checkpoint (:func:`retain_ros.policies.pi0.save_pi0_checkpoint`)
with a ``demo_info.json`` next to it: its role, settings, settings hash (the cache key), data
digest and training curve.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Callable
from typing import Dict
from typing import Optional

#: The file of a demo checkpoint's training record.
INFO_FILE = 'demo_info.json'


def read_info(checkpoint: str) -> Optional[Dict]:
    """Return a demo checkpoint's ``demo_info.json``, or None when it has none."""
    try:
        with open(os.path.join(checkpoint, INFO_FILE), encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_info(checkpoint: str, info: Dict) -> None:
    """Write ``info`` as the ``demo_info.json`` of ``checkpoint``."""
    with open(os.path.join(checkpoint, INFO_FILE), 'w', encoding='utf-8') as f:
        json.dump(info, f, indent=2)


def write_atomically(out_dir: str, write: Callable[[str], None]) -> None:
    """Call ``write(staging_dir)``, then replace ``out_dir`` with it (a crash leaves the old)."""
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
