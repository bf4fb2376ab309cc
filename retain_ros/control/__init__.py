"""Pure-Python control pieces (no rclpy): safety filter, fixed-rate loop, trajectory follower."""
