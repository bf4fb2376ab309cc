"""The demo's training tensors: the instructed block's location bins."""
from __future__ import annotations

import numpy as np

from retain_ros.demo.data import generate_demos
from retain_ros.demo.dataset import location_bins
from retain_ros.demo.model import LOCATION_BINS
from retain_ros.sim import SimWorld


def test_location_bins_follow_the_camera_view():
    from retain_ros.sim import world

    corners = np.array([[world.VIEW_X[0], world.VIEW_Y[1]], [world.VIEW_X[1] - 1e-6,
                                                             world.VIEW_Y[0] + 1e-6],
                        [0.0, 0.5]])
    bins = location_bins(corners).tolist()
    n = LOCATION_BINS
    assert bins[0] == [0, 0] and bins[1] == [n - 1, n - 1]
    assert bins[2] == [n // 2, int((world.VIEW_Y[1] - 0.5) / 1.2 * n)]
    # the block centre the expert demonstrates is the one recorded
    data = generate_demos(['reach_red'], 'generalist', 1, horizon=4, dt=0.1, steps=2)
    w = SimWorld(image_size=96)
    w.reset('reach_red', 'generalist', 100_000)    # the first training seed
    assert np.allclose(data.targets[0], w.target_position())
