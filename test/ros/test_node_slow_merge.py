"""A slow live re-merge (seconds, as at pi0 size) on a real rclpy graph.

The merge runs on the node's worker thread: the ``set_parameters`` call returns only when the
merge finished (with its result), while the executor keeps serving the node's other callbacks
(parameter reads, diagnostics, services); no command is published meanwhile, the diagnostics say
why, and an episode cannot start in the middle. The merge is made slow by wrapping the runtime's
real ``set_spec`` with a sleep before it (the merge itself is the real one).
"""
import json
import threading
import time

import pytest

pytest.importorskip('rclpy')

from conftest import RosHarness  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rcl_interfaces.srv import GetParameters  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from retain_ros.ros.policy_node.node import LATCHED_QOS  # noqa: E402

OUT = '/arm_controller/joint_trajectory'
SLOW_S = 3.0


def _slow_set_spec(node, seconds):
    """Make the node's next merges take ``seconds`` longer; return the event set on entry."""
    runtime = node.runtime
    real = runtime.set_spec
    entered = threading.Event()

    def slow(spec):
        entered.set()
        time.sleep(seconds)
        return real(spec)

    runtime.set_spec = slow
    return entered


def test_slow_merge_runs_off_the_executor_and_holds_commands(tiny_pi0_checkpoints):
    harness = RosHarness()
    pre, ft = tiny_pi0_checkpoints
    stop = threading.Event()
    feeder = None
    try:
        node = harness.start_node(pre, ft, alpha=0.0)
        traj = harness.subscribe(JointTrajectory, OUT)
        diag = harness.subscribe(DiagnosticArray, '/diagnostics')
        state = harness.subscribe(String, '/retain_policy/merge_state', LATCHED_QOS)
        feeder = harness.feed_in_background(stop)
        traj.wait(2, timeout=30)
        entered = _slow_set_spec(node, SLOW_S)
        result = {}

        def set_alpha():
            t0 = time.monotonic()
            result['res'] = harness.set_params(alpha=1.0)[0]
            result['wall'] = time.monotonic() - t0
            result['done'] = time.monotonic()

        setter = threading.Thread(target=set_alpha, daemon=True)
        setter.start()
        assert entered.wait(20), 'the merge never started'
        started = time.monotonic()
        # the executor still answers while the merge runs: a parameter read, an episode start
        # (refused: busy), diagnostics
        t0 = time.monotonic()
        request = GetParameters.Request()
        request.names = ['alpha']
        got = harness.call(GetParameters, '/retain_policy/get_parameters', request)
        read_s = time.monotonic() - t0
        assert read_s < 1.0, f'parameter read blocked {read_s:.2f} s by the merge'
        assert got.values[0].double_value == 0.0          # the old value until the set succeeded
        episode = harness.call(Trigger, '/retain_policy/start_episode')
        assert not episode.success and 'busy' in episode.message, episode.message
        assert time.monotonic() - started < SLOW_S, 'the checks above waited for the merge'
        diag.clear()
        status = diag.wait(1, timeout=SLOW_S,
                           predicate=lambda m: 're-merging' in m.status[0].message)
        assert status, 'no diagnostics during the merge'
        setter.join(30)
        res = result['res']
        assert res.successful, res.reason
        assert result['wall'] >= SLOW_S
        # no command between the merge's start and the set's reply (0.3 s for messages in flight)
        during = [t for t, _ in traj.items[:] if started + 0.3 < t < result['done']]
        assert not during, f'{len(during)} chunk(s) published during the merge'
        # commands resume with the new weights, and merge_state says so
        traj.wait(len(traj) + 2, timeout=30)
        state.wait(1, timeout=10, predicate=lambda m: all(
            a == 1.0 for a in json.loads(m.data)['alpha'].values()))
        assert node.hold_reason is None
    finally:
        stop.set()
        if feeder is not None:
            feeder.join(5)
        harness.shutdown()


def test_worker_parameter_service_replies_as_soon_as_the_work_is_done():
    """On a quiet node (no timer, no traffic) the reply goes out when the worker finishes: the
    finished future itself wakes the executor. Other sets wait their turn (one worker)."""
    import rclpy
    from rcl_interfaces.msg import SetParametersResult
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    from retain_ros.ros.policy_node.parameter_services import Worker
    from retain_ros.ros.policy_node.parameter_services import WorkerParameterService

    harness = RosHarness()
    worker = Worker('test-worker')
    node = rclpy.create_node('quiet_node', context=harness.context,
                             start_parameter_services=False)
    try:
        WorkerParameterService(node, worker)
        node.declare_parameter('x', 0.0)
        calls = []

        def slow(params):
            calls.append(time.monotonic())
            time.sleep(0.5)
            value = params[0].value
            return SetParametersResult(successful=value >= 0, reason='' if value >= 0 else 'neg')

        node.add_on_set_parameters_callback(slow)
        harness.executor.add_node(node)
        replies = {}

        def set_x(value):
            request = SetParameters.Request()
            request.parameters = [Parameter('x', value=value).to_parameter_msg()]
            t0 = time.monotonic()
            res = harness.call(SetParameters, '/quiet_node/set_parameters', request).results[0]
            replies[value] = (res, time.monotonic() - t0)

        threads = [threading.Thread(target=set_x, args=(v,)) for v in (1.0, -1.0)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        ok, bad = replies[1.0][0], replies[-1.0][0]
        assert ok.successful and not bad.successful and bad.reason == 'neg'
        assert node.get_parameter('x').value == 1.0
        assert len(calls) == 2 and abs(calls[1] - calls[0]) >= 0.5   # serialised, not parallel
        # each reply within 0.5 s of work + its turn + a round trip, not a timer period later
        assert min(r[1] for r in replies.values()) < 0.5 + 0.4, replies
        assert max(r[1] for r in replies.values()) < 1.0 + 0.4, replies
    finally:
        harness.executor.remove_node(node)
        worker.stop()
        node.destroy_node()
        harness.shutdown()
