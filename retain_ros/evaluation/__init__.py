"""Evaluation rollouts: episode logs, alpha schedules, Wilson intervals, reports (no ROS)."""
