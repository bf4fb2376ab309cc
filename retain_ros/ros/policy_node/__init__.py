"""The ``retain_policy`` lifecycle node, one concern per module.

- :mod:`.node`: the lifecycle (configure / activate / deactivate / cleanup) and its wiring;
- :mod:`.main`: the command line (``ros2 run retain_ros policy_node``, ``retain-ros node``);
- :mod:`.params`: the parameter table (names, types, defaults, ranges, descriptions);
- :mod:`.inputs`: camera, instruction and robot-state subscriptions;
- :mod:`.outputs`: one publisher or action client per embodiment output;
- :mod:`.live_merge`: alpha / recipe parameter sets and ``~/reload_weights``;
- :mod:`.parameter_services`: the merge worker thread the parameter sets and reloads run on;
- :mod:`.embodiment`: loading and re-loading the robot's embodiment;
- :mod:`.episodes`: the evaluation episode services; :mod:`.recording`: episode bags;
- :mod:`.diagnostics`: the ``/diagnostics`` status.
"""
