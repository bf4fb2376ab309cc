"""The SmolVLA reference by LeRobot 0.4.4 (test/data/smolvla_ref): path, tolerance, inputs."""
from __future__ import annotations

import os

import numpy as np

from retain_ros.policies.base import Observation

REF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data',
                       'smolvla_ref')
ACTION_TOL = 1e-4


def observations(ref):
    arrays, meta = ref
    return [Observation(images={'base': arrays['image_base_uint8_hwc'][i].numpy(),
                                'wrist': arrays['image_wrist_uint8_hwc'][i].numpy()},
                        instruction=meta['instructions'][i],
                        state=arrays['state_raw'][i].numpy().astype(np.float64))
            for i in range(len(meta['instructions']))]
