"""Operator console in the browser for evaluation episodes (``retain-ros console``).

A small web app (FastAPI + uvicorn + a websocket) in front of one rclpy node that talks to the
``retain_policy`` node over its public ROS interface only: episode services, ``~/evaluation``,
``~/merge_state``, ``/diagnostics``, a camera topic and the standard parameter services.
"""
