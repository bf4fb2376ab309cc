"""Pure-Python demo tooling: training of the demo checkpoints (no ROS)."""
