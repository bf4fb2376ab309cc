"""Simulated arm, scenes, tasks and scripted expert (numpy / OpenCV; no ROS)."""
