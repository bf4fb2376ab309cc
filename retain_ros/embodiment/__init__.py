"""The robot's side of the policy (pure Python, no rclpy): state in, per-output commands out.

An embodiment file (YAML, ``config/embodiments/*.yaml`` presets or a path) says how the policy's
state vector is assembled from ROS inputs, what each slice of its action vector means, which
unit operators convert between robot and policy units, and which controller outputs get which
slices. See ``docs/embodiment.md``.
"""
from retain_ros.embodiment.embodiment import Embodiment
from retain_ros.embodiment.errors import EmbodimentError
from retain_ros.embodiment.presets import list_presets
from retain_ros.embodiment.presets import load_embodiment
from retain_ros.embodiment.presets import load_embodiment_data
from retain_ros.embodiment.spec import OutputCommand
from retain_ros.embodiment.spec import OutputLimits
from retain_ros.embodiment.spec import OutputSpec
from retain_ros.embodiment.spec import RobotState

__all__ = ['Embodiment', 'EmbodimentError', 'OutputCommand', 'OutputLimits', 'OutputSpec',
           'RobotState', 'list_presets', 'load_embodiment', 'load_embodiment_data']
