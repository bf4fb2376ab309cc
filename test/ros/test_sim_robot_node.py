"""The sim_robot node in a real rclpy graph.

Trajectories in, joint states and images out, the reset service, the latched instruction, the
automatic end of episodes, and ``retain-ros sim``.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from retain_ros.sim.world import inverse_kinematics
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray
from std_msgs.msg import String

from helpers.sim_graph import Graph  # noqa: E402
from helpers.sim_graph import IMAGE_SIZE  # noqa: E402
from helpers.sim_graph import LATCHED  # noqa: E402
from helpers.sim_graph import ROOT  # noqa: E402
from helpers.sim_graph import wait_for  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture(scope='module')
def graph():
    g = Graph()
    try:
        assert wait_for(lambda: len(g.joint_states) > 0, 10.0), 'no joint_states'
        yield g
    finally:
        g.close()


def test_joint_states_and_image(graph):
    assert wait_for(lambda: len(graph.images) >= 2, 15.0), 'no images'
    js = graph.joint_states[-1]
    assert list(js.name) == graph.sim.joint_names
    assert len(js.position) == len(js.velocity) == 3
    assert js.header.stamp.sec > 0
    img = graph.images[-1]
    assert (img.height, img.width, img.encoding, img.step) == (IMAGE_SIZE, IMAGE_SIZE, 'rgb8',
                                                               IMAGE_SIZE * 3)
    assert len(img.data) == IMAGE_SIZE * IMAGE_SIZE * 3
    rgb = np.frombuffer(bytes(img.data), np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE, 3)
    assert rgb.std() > 5.0  # a scene, not a blank frame
    assert img.header.frame_id == 'camera'
    assert wait_for(lambda: len(graph.success) > 0, 10.0)


def test_trajectory_moves_joints_in_message_order(graph):
    graph.reset(task='reach_red', split='', seed=1, auto_end_episode=False)
    start = graph.latest_q()
    goal = start + np.array([0.4, -0.5, 0.3])
    mid = start + 0.5 * (goal - start)
    names = list(reversed(graph.sim.joint_names))  # the node must reorder by name
    graph.send_trajectory(names, [(0.4, mid[::-1]), (0.8, goal[::-1])], stamp_now=True)
    seen = []

    def arrived():
        q = graph.latest_q()
        seen.append(q)
        return np.allclose(q, goal, atol=0.01)

    assert wait_for(arrived, 15.0), f'joints at {graph.latest_q()}, goal {goal}'
    # it moved gradually (interpolated), not in one jump
    span = np.linalg.norm(goal - start)
    partial = [q for q in seen if 0.1 < np.linalg.norm(q - start) < 0.9 * span]
    assert partial, 'no intermediate joint states seen'
    assert wait_for(lambda: np.allclose(graph.joint_states[-1].velocity, 0.0, atol=1e-6), 10.0)


def test_forward_command_and_bad_messages(graph):
    graph.reset(seed=2)
    target = graph.latest_q() + np.array([-0.3, -0.3, 0.2])
    rejected = graph.sim.rejected
    assert wait_for(lambda: graph.cmd_pub.get_subscription_count() > 0, 15.0)
    graph.cmd_pub.publish(Float64MultiArray(data=[1.0, 2.0]))  # wrong length: rejected
    graph.send_trajectory(['no_such_joint'], [(0.5, [0.0])])   # unknown joint: rejected
    assert wait_for(lambda: graph.sim.rejected == rejected + 2, 10.0)
    graph.cmd_pub.publish(Float64MultiArray(data=target.tolist()))
    assert wait_for(lambda: np.allclose(graph.latest_q(), target, atol=0.01), 15.0)


def _stamp(msg):
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def test_trajectory_ending_in_the_past_is_rejected(graph):
    # joint_trajectory_controller rejects it; the old sim accepted stamps up to 60 s off and
    # jumped straight to the last point
    graph.reset(task='reach_red', split='', seed=1, auto_end_episode=False)
    q0 = graph.latest_q()
    rejected = graph.sim.rejected
    graph.send_trajectory(graph.sim.joint_names, [(0.5, q0 + 0.3), (1.0, q0 + 0.5)],
                          stamp_offset=-30.0)
    assert wait_for(lambda: graph.sim.rejected == rejected + 1, 10.0)
    time.sleep(0.3)
    np.testing.assert_allclose(graph.latest_q(), q0, atol=1e-9)
    # an empty trajectory is rejected too (it is not a stop command for JTC)
    graph.send_trajectory(graph.sim.joint_names, [])
    assert wait_for(lambda: graph.sim.rejected == rejected + 2, 10.0)
    # partial goals are rejected (allow_partial_joints_goal is false by default)
    graph.send_trajectory(graph.sim.joint_names[:2], [(0.5, q0[:2])])
    assert wait_for(lambda: graph.sim.rejected == rejected + 3, 10.0)


def test_future_stamp_moves_towards_first_point_before_the_stamp(graph):
    # JTC interpolates from the state at pickup to the first point's absolute time: the arm
    # starts moving at once, slowly, instead of holding until the stamp
    graph.reset(task='reach_red', split='', seed=1, auto_end_episode=False)
    q0 = graph.latest_q()
    goal = q0 + np.array([0.3, -0.3, 0.3])
    count = len(graph.joint_states)
    graph.send_trajectory(graph.sim.joint_names, [(0.5, goal)], stamp_offset=1.5)
    assert wait_for(lambda: graph.sim.follower.start_time is not None, 10.0)
    stamp = graph.sim.follower.start_time
    assert wait_for(lambda: np.allclose(graph.latest_q(), goal, atol=1e-6), 15.0)
    early = [m for m in graph.joint_states[count:] if _stamp(m) < stamp - 0.2]
    assert early, 'no joint states before the stamp'
    fraction = [np.linalg.norm(np.array(m.position) - q0) / np.linalg.norm(goal - q0)
                for m in early]
    assert max(fraction) > 0.2, fraction       # it moved before the stamp
    assert max(fraction) < 0.95, fraction      # but did not jump to the point
    # on time: the first point is reached at stamp + 0.5 s, not before
    reached = [_stamp(m) for m in graph.joint_states[count:]
               if np.allclose(m.position, goal, atol=1e-3)]
    assert reached[0] > stamp + 0.3


def test_points_in_the_past_are_skipped(graph):
    graph.reset(task='reach_red', split='', seed=1, auto_end_episode=False)
    q0 = graph.latest_q()
    delta = np.array([0.2, -0.2, 0.2])
    points = [(0.1 * (i + 1), q0 + delta * (i + 1) / 20) for i in range(20)]   # 2 s
    graph.send_trajectory(graph.sim.joint_names, points, stamp_offset=-1.0)
    assert wait_for(lambda: graph.sim.follower.start_time is not None, 10.0)
    # the first command is already half way along the trajectory (points 1..10 skipped)
    first = graph.sim.world.joint_targets()
    assert np.linalg.norm(first - q0) >= 0.45 * np.linalg.norm(delta)
    assert wait_for(lambda: np.allclose(graph.latest_q(), q0 + delta, atol=1e-6), 15.0)


def test_reset_service_and_parameters(graph):
    response = graph.reset(task='reach_yellow', split='new_ood', seed=5)
    assert response.success, response.message
    info = json.loads(response.message)
    assert info['task'] == 'reach_yellow' and info['split'] == 'new_ood' and info['seed'] == 5
    assert info['instruction'] == graph.sim.world.instruction and info['variation_tag']
    again = json.loads(graph.reset().message)
    assert again == info  # same (task, split, seed): same scene
    # the arm holds after a reset (no leftover trajectory)
    q0 = graph.latest_q()
    time.sleep(0.3)
    np.testing.assert_allclose(graph.latest_q(), q0, atol=1e-9)
    bad = graph.sim.set_parameters([Parameter('task', value='fly_to_the_moon')])
    assert not bad[0].successful and 'unknown task' in bad[0].reason
    bad = graph.sim.set_parameters([Parameter('split', value='bogus')])
    assert not bad[0].successful
    graph.sim.set_parameters([Parameter('split', value='generalist')])
    response = graph.reset()  # reach_yellow has no generalist split
    assert not response.success and 'splits' in response.message
    graph.reset(task='reach_red', split='')


def test_instruction_latched_for_late_subscriber(graph):
    response = graph.reset(task='reach_blue', split='generalist', seed=3)
    assert response.success
    # subscriptions made after the reset (never destroyed while the executor spins: rclpy races)
    got = []
    graph.node.create_subscription(String, '/instruction', got.append, LATCHED)
    scene = []
    graph.node.create_subscription(String, '/sim_robot/scene', scene.append, LATCHED)
    assert wait_for(lambda: got and scene, 15.0), 'late subscriber got no instruction'
    assert got[-1].data == 'touch the blue block'
    assert json.loads(scene[-1].data)['task'] == 'reach_blue'


def test_auto_end_episode_timeout_and_success(graph):
    graph.end_calls.clear()
    graph.reset(task='reach_red', split='generalist', seed=4, auto_end_episode=True,
                episode_timeout=0.6)
    assert wait_for(lambda: graph.end_calls, 10.0), 'end_episode not called on timeout'
    assert graph.end_calls[0][0] is False and graph.end_calls[0][1] >= 0.6
    time.sleep(0.4)
    assert len(graph.end_calls) == 1  # once per reset
    assert wait_for(lambda: graph.episodes and graph.episodes[-1]['seed'] == 4, 10.0)
    outcome = graph.episodes[-1]
    assert outcome['success'] is False and outcome['reason'] == 'timeout'
    assert outcome['reported'] is True and outcome['task'] == 'reach_red'

    graph.end_calls.clear()
    graph.end_reply = (False, 'no episode is running')
    graph.reset(seed=6, episode_timeout=8.0)
    goal = inverse_kinematics(graph.sim.world.target_position())
    graph.send_trajectory(graph.sim.joint_names, [(1.0, goal)])
    assert wait_for(lambda: graph.end_calls, 8.0), 'end_episode not called on success'
    assert graph.end_calls[0][0] is True and graph.end_calls[0][1] < 8.0
    assert wait_for(lambda: graph.success and graph.success[-1].data, 10.0)
    assert wait_for(lambda: graph.episodes[-1]['seed'] == 6, 10.0)
    outcome = graph.episodes[-1]
    assert outcome['success'] is True and outcome['reason'] == 'success'
    assert outcome['reported'] is False and outcome['message'] == 'no episode is running'
    time.sleep(0.3)
    assert len(graph.end_calls) == 1
    graph.end_reply = (True, 'ok')
    graph.sim.set_parameters([Parameter('auto_end_episode', value=False)])


def test_cli_runs_the_node():
    """``retain-ros sim`` starts the node from an argv list and stops cleanly on Ctrl-C."""
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               ROS_DOMAIN_ID=str(random.randint(100, 199)), PYTHONPATH=ROOT)
    proc = subprocess.Popen(
        [sys.executable, '-m', 'retain_ros.cli', 'sim', '--ros-args', '-r', '__ns:=/clitest',
         '-p', 'image_size:=24', '-p', 'task:=reach_green'],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env['ROS_DOMAIN_ID']))
    node = rclpy.create_node('cli_probe', context=context)
    got = []
    node.create_subscription(String, '/clitest/instruction', got.append, LATCHED)
    images = []
    node.create_subscription(Image, '/clitest/camera/image_raw', images.append, 5)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline and not (got and images):
            executor.spin_once(timeout_sec=0.1)
        assert got and got[-1].data == 'touch the green block', proc.poll()
        assert images and images[-1].width == 24
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=10.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out
    assert 'sim robot up' in out


def test_help(capsys):
    from retain_ros.ros.sim_robot.main import main
    assert main(['--help']) == 0
    out = capsys.readouterr().out
    assert 'auto_end_episode' in out and 'episode_timeout' in out


def test_closed_loop_expert_chunks_succeed(graph):
    """Chunked trajectories, replanned from joint_states like the policy node does, solve a task.

    The planner only sees what a policy would (joint_states from the topic); the goal comes from
    the scripted expert of the sim package.
    """
    from retain_ros.sim.expert import expert_chunk
    graph.episodes.clear()
    graph.end_calls.clear()
    graph.reset(task='reach_yellow', split='new_ood', seed=11, auto_end_episode=True,
                episode_timeout=10.0)
    dt, horizon = 0.1, 10
    deadline = time.monotonic() + 10.0
    while not graph.end_calls and time.monotonic() < deadline:
        q = graph.latest_q()
        chunk = expert_chunk(graph.sim.world, horizon, dt, start=q)
        graph.send_trajectory(graph.sim.joint_names,
                              [((i + 1) * dt, row) for i, row in enumerate(chunk)],
                              stamp_now=True)
        time.sleep(3 * dt)  # replan every 3 actions; the new chunk replaces the old one
    assert graph.end_calls and graph.end_calls[0][0] is True
    assert wait_for(lambda: graph.episodes and graph.episodes[-1]['seed'] == 11, 10.0)
    assert graph.episodes[-1]['success'] is True
    graph.sim.set_parameters([Parameter('auto_end_episode', value=False)])
