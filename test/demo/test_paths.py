"""Where the demo checkpoints live, and the error that says how to make them."""
from __future__ import annotations

import os

import pytest

from retain_ros.demo.paths import demo_checkpoints
from retain_ros.demo.paths import demo_dir
from retain_ros.demo.paths import DemoCheckpointsMissing


def test_paths(tmp_path, monkeypatch):
    monkeypatch.setenv('RETAIN_ROS_DEMO_DIR', str(tmp_path / 'x'))
    assert demo_dir() == str(tmp_path / 'x')
    with pytest.raises(DemoCheckpointsMissing, match='retain-ros demo-train'):
        demo_checkpoints()
    monkeypatch.delenv('RETAIN_ROS_DEMO_DIR')
    assert demo_dir().endswith(os.path.join('.cache', 'retain_ros', 'demo'))
