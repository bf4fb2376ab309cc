"""Merging engine: checkpoints, parameter groups, recipes, live in-place merger (no ROS)."""
