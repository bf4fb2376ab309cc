"""VLA policy adapters: Observation -> ActionChunk (torch; no ROS)."""
