"""Shared helpers of the LeRobot parity tests (test/policies/test_*_parity.py, empty cameras)."""
import json
import os

import numpy as np
from safetensors.torch import load_file
import torch

from retain_ros.policies.base import Observation

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data')
#: Final actions must match LeRobot within this (float32, CPU), as issue 8 asks.
ACTION_TOL = 1e-4
#: Intermediate float arrays (images, normalized state, velocities).
ARRAY_TOL = 1e-5


def reference(name):
    """``(directory, arrays, reference.json)`` of a fixture folder in test/data."""
    directory = os.path.join(DATA, name)
    with open(os.path.join(directory, 'reference.json'), encoding='utf-8') as f:
        meta = json.load(f)
    return directory, load_file(os.path.join(directory, 'reference.safetensors')), meta


def observations(ref, meta):
    """Return the fixture's raw inputs as Observation objects: uint8 HWC images, raw state."""
    return [Observation(images={'base': ref['image_base_uint8_hwc'][i].numpy(),
                                'wrist': ref['image_wrist_uint8_hwc'][i].numpy()},
                        instruction=meta['instructions'][i], state=ref['state_raw'][i].numpy())
            for i in range(len(meta['instructions']))]


def max_abs(a, b):
    """Largest absolute difference of two arrays / tensors (float)."""
    a = a.detach().cpu().double() if isinstance(a, torch.Tensor) else torch.as_tensor(
        np.asarray(a, dtype=np.float64))
    b = b.detach().cpu().double() if isinstance(b, torch.Tensor) else torch.as_tensor(
        np.asarray(b, dtype=np.float64))
    assert a.shape == b.shape, f'shape {tuple(a.shape)} != reference {tuple(b.shape)}'
    return float((a - b).abs().max())
