"""The merged policy the node runs: policy, live merger, lock, generation, validity (no ROS)."""
