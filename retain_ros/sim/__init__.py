"""Simulated robot: planar arm, table, coloured blocks, camera, tasks and a scripted expert.

Pure Python (numpy + OpenCV); the ROS node wrapping it is the ``sim_robot`` node (ros layer).
"""
from retain_ros.sim.tasks import SPLITS
from retain_ros.sim.tasks import Task
from retain_ros.sim.tasks import TASKS
from retain_ros.sim.tasks import tasks_for_split
from retain_ros.sim.world import SceneInfo
from retain_ros.sim.world import SimWorld

__all__ = ['SPLITS', 'SceneInfo', 'SimWorld', 'TASKS', 'Task', 'tasks_for_split']
