"""The ``sim_robot`` node: a simulated arm with ros2_control-like interfaces, by concern.

- :mod:`.node`: the node's wiring: world, trajectory follower, physics and camera timers, reset;
- :mod:`.main`: the command line (``ros2 run retain_ros sim_robot``, ``retain-ros sim``);
- :mod:`.parameters`: the parameter table (names, defaults, descriptors);
- :mod:`.commands`: the extra command inputs (velocities, targets by name, twist, gripper);
- :mod:`.camera`: raw or JPEG camera frames;
- :mod:`.episodes`: ending evaluation episodes and telling the policy node.
"""
