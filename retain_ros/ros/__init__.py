"""ROS 2 layer: the policy node, the simulated robot, the demo orchestrator."""
