"""Episode recording (rosbag2 layout, MCAP storage) and LeRobot v3 export (no ROS imports)."""
