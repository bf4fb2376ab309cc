"""chunk_blending: rtc on a real rclpy graph: the node guides each chunk towards the rest of the
previous one (delay from the measured latency, warm-up excluded)."""
import time

import numpy as np
import pytest

pytest.importorskip('rclpy')

from conftest import RosHarness  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

OUT = '/arm_controller/joint_trajectory'
DT = 0.05


def _stamp(msg):
    return msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec


def _boundary_jumps(msgs):
    """|new chunk's first point - the previous chunk's point for the same time| per boundary."""
    jumps = []
    for a, b in zip(msgs, msgs[1:]):
        shift = int(round((_stamp(b) - _stamp(a)) / DT))
        if 0 <= shift < len(a.points):
            jumps.append(np.abs(np.array(b.points[0].positions)
                                - np.array(a.points[shift].positions)).max())
    return np.array(jumps)


def _run(tiny_pi0_checkpoints, blending):
    harness = RosHarness()
    pre, ft = tiny_pi0_checkpoints
    try:
        node = harness.start_node(pre, ft, chunk_blending=blending, control_period=DT,
                                  replan_steps=2)
        traj = harness.subscribe(JointTrajectory, OUT)
        calls = []
        if node._rtc is not None:
            original = node._rtc.guidance_for

            def counted(*args, **kwargs):
                guidance = original(*args, **kwargs)
                calls.append(guidance is not None)
                return guidance

            node._rtc.guidance_for = counted
        harness.feed(0.5)
        start = time.monotonic()
        harness.feed(2.5)
        msgs = [m for t, m in traj.items[:] if t > start]
        latency = None if node._rtc is None else node._rtc.latency.count
        return msgs, calls, latency
    finally:
        harness.shutdown()


def test_rtc_blends_chunks(tiny_pi0_checkpoints):
    plain, _, _ = _run(tiny_pi0_checkpoints, 'none')
    blended, calls, measured = _run(tiny_pi0_checkpoints, 'rtc')
    assert len(plain) >= 5 and len(blended) >= 5
    assert measured >= 3 and any(calls), 'rtc never guided a chunk'
    for msg in blended:
        assert np.all(np.isfinite([p.positions for p in msg.points]))
    plain_jump = np.median(_boundary_jumps(plain))
    blended_jump = np.median(_boundary_jumps(blended))
    assert blended_jump < plain_jump, (blended_jump, plain_jump)
