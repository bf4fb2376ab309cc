"""``retain-ros demo``: the closed-loop demo through the real ROS graph, one concern per module.

- :mod:`.main`: the command line and the run (checkpoints, nodes, the demo sweep, the report);
- :mod:`.sweep`: the demo sweep's alpha settings, scenes and episode order (no rclpy);
- :mod:`.adaptive`: the adaptive sweep (``--adaptive``): the node's sequential schedule decides,
  the demo gives each block its scene and prints the decisions (no rclpy);
- :mod:`.driver`: the episode driver, through the sim's and the policy node's services (also
  runs one episode on its own: ``python -m retain_ros.ros.closed_loop_demo.driver``);
- :mod:`.processes`: parameter files and the node processes.

The demo sweep runs through ROS; the offline sweep of :mod:`retain_ros.demo.rollout` runs the
same settings in-process.
"""
