"""Pure-Python control pieces (no rclpy): safety filter per output space, fixed-rate loop."""
