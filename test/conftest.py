"""Shared pytest set-up: ROS domain isolation, tiny checkpoints, the ROS harness, demo fixtures.

- Every pytest run gets its own ``ROS_DOMAIN_ID`` (random 1..200 unless one is set) and stays on
  loopback (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``), so parallel runs never see each other.
- ``tiny_pi0_checkpoints``: two tiny pi0 checkpoints in LeRobot layout (random weights, different
  seeds) written with the policies package's own ``save_pi0_checkpoint``; session-scoped.
- ``ros_harness``: a real rclpy context with a probe node (publish inputs, collect outputs, call
  services) and helpers to start the ``retain_policy`` node in-process on its own executor thread.
- ``trained`` / ``fresh_policy`` (the demo tests): checkpoints from ``retain-ros demo-train
  --quick`` (session-scoped), fresh tiny pi0 policies with a data set's statistics.

One conftest for the whole tree: a second ``conftest.py`` in a sub-folder would replace this
module in ``sys.modules`` (the folders have no ``__init__.py``) and break ``from conftest import``.
"""
from __future__ import annotations

import os
import random
import sys
import tempfile
import threading
import time

import numpy as np
import pytest

os.environ.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(1, 200)))
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
# ROS logs and the nodes' default episode logs go to a per-run directory, not ~/.ros
os.environ['ROS_HOME'] = tempfile.mkdtemp(prefix='retain_ros_test_home_')
_VENV = os.path.dirname(os.path.dirname(sys.executable))
if os.path.isdir(os.path.join(_VENV, 'share', 'ament_index')) or 'AMENT_PREFIX_PATH' not in \
        os.environ:
    os.environ['AMENT_PREFIX_PATH'] = os.pathsep.join(
        p for p in (_VENV, os.environ.get('AMENT_PREFIX_PATH', '')) if p)

#: joint names of the tiny test robot (the tiny pi0 state / action width)
TEST_JOINTS = ('j0', 'j1', 'j2', 'j3')
#: instruction used by the tests
TEST_INSTRUCTION = 'put the gripper on the red block'


def write_tiny_pi0(out_dir, seed, camera_names=('base',), image_size=32, chunk_size=10,
                   control_period=0.1, state_dim=None, action_dim=None):
    """Write a randomly initialised tiny pi0 checkpoint (LeRobot layout) and return its path.

    The tests' sizes (32 px, chunk 10, 0.1 s) on the package's one writer,
    :func:`retain_ros.ros.tools.checkpoints.write_random_tiny_pi0`; state and action widths are
    ``len(TEST_JOINTS)`` unless given, normalization statistics the identity.
    """
    from retain_ros.ros.tools.checkpoints import write_random_tiny_pi0

    return write_random_tiny_pi0(out_dir, seed, camera_names,
                                 state_dim=state_dim or len(TEST_JOINTS),
                                 action_dim=action_dim or len(TEST_JOINTS),
                                 image_size=image_size, chunk_size=chunk_size,
                                 control_period=control_period)


@pytest.fixture(scope='session')
def tiny_pi0_checkpoints(tmp_path_factory):
    """Two tiny pi0 checkpoints ``(pretrained_dir, finetuned_dir)`` with different weights."""
    root = tmp_path_factory.mktemp('tiny_pi0')
    return write_tiny_pi0(root / 'pretrained', seed=1), write_tiny_pi0(root / 'finetuned', seed=2)


class Collector:
    """Thread-safe list of received messages with a wait helper."""

    def __init__(self):
        self._cond = threading.Condition()
        self.items = []

    def __call__(self, msg):
        with self._cond:
            self.items.append((time.monotonic(), msg))
            self._cond.notify_all()

    def wait(self, count=1, timeout=20.0, predicate=None):
        """Wait until ``count`` messages (matching ``predicate``) arrived; return them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [m for _, m in self.items if predicate is None or predicate(m)]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f'timed out after {timeout} s waiting for {count} message(s), got '
                        f'{len(got)}')
                self._cond.wait(left)

    def clear(self):
        with self._cond:
            self.items.clear()

    def __len__(self):
        with self._cond:
            return len(self.items)


class RosHarness:
    """A real rclpy context, a probe node and in-process ``retain_policy`` nodes."""

    def __init__(self):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from retain_ros.ros.node_main import make_executor
        from retain_ros.ros.node_main import spin_in_background

        self.context = Context()
        rclpy.init(context=self.context)
        self.probe = rclpy.create_node('retain_test_probe', context=self.context)
        # the probe and the nodes under test spin on separate executors (as separate processes
        # would), so a busy node never delays what the probe receives or its timestamps
        self.probe_executor = SingleThreadedExecutor(context=self.context)
        self.probe_executor.add_node(self.probe)
        self.executor = make_executor(context=self.context)   # what the node's main() spins
        self.nodes = []
        self._publishers = {}
        self._threads = [spin_in_background(e) for e in (self.probe_executor, self.executor)]

    # ---------------------------------------------------------------- nodes
    def start_node(self, pretrained, finetuned, **params):
        """Start a ``retain_policy`` node in this context with parameter overrides."""
        from rclpy.parameter import Parameter
        from retain_ros.ros.policy_node.node import PolicyNode

        values = {
            'pretrained_path': pretrained,
            'finetuned_paths': [finetuned] if isinstance(finetuned, str) else list(finetuned),
            'camera_topics': ['camera/image_raw'],
            'joint_names': list(TEST_JOINTS),
            'device': 'cpu',
            'dtype': 'float32',
            'default_instruction': TEST_INSTRUCTION,
            'control_period': 0.05,
            'replan_steps': 2,
            'max_observation_age': 2.0,
        }
        values.update(params)
        # values are plain Python values or Parameter objects; None = no override (the node's
        # default, e.g. an empty joint_names)
        overrides = [v if isinstance(v, Parameter) else Parameter(k, value=v)
                     for k, v in values.items() if v is not None]
        node = PolicyNode(context=self.context, parameter_overrides=overrides)
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def stop_node(self, node):
        self.executor.remove_node(node)
        node.destroy_node()
        self.nodes.remove(node)

    # ---------------------------------------------------------------- probe I/O
    def publisher(self, msg_type, topic, qos=10):
        key = (msg_type, topic)
        if key not in self._publishers:
            self._publishers[key] = self.probe.create_publisher(msg_type, topic, qos)
        return self._publishers[key]

    def subscribe(self, msg_type, topic, qos=10):
        collector = Collector()
        self.probe.create_subscription(msg_type, topic, collector, qos)
        return collector

    def stamp(self, seconds=None):
        """``builtin_interfaces/Time`` of ``seconds`` (probe clock now when None)."""
        from retain_ros.ros.conversions import sec_to_time

        if seconds is None:
            return self.probe.get_clock().now().to_msg()
        return sec_to_time(seconds)

    def publish_image(self, topic='camera/image_raw', rgb=None, side=32, encoding='rgb8',
                      stamp=None):
        """Publish an image stamped ``stamp`` (s; probe clock now when None)."""
        from sensor_msgs.msg import Image
        from retain_ros.ros.conversions import rgb_to_image

        if rgb is None:
            rgb = np.full((side, side, 3), 128, np.uint8)
            rgb[: side // 2, :, 0] = 255
        msg = rgb_to_image(rgb, encoding=encoding)
        msg.header.stamp = self.stamp(stamp)
        self.publisher(Image, topic).publish(msg)
        return msg

    def publish_joints(self, positions, names=TEST_JOINTS, topic='joint_states', stamp=None):
        """Publish a JointState stamped ``stamp`` (s; probe clock now when None)."""
        from sensor_msgs.msg import JointState

        msg = JointState()
        msg.header.stamp = self.stamp(stamp)
        msg.name = list(names)
        msg.position = [float(v) for v in positions]
        self.publisher(JointState, topic).publish(msg)
        return msg

    def now(self):
        """ROS time (s) of the probe's clock: compare with the nodes' header stamps."""
        return self.probe.get_clock().now().nanoseconds * 1e-9

    def feed(self, duration, joints=(0.0, 0.0, 0.0, 0.0), period=0.05, joint_stamp=None,
             **image_kwargs):
        """Publish fresh images and joint states for ``duration`` seconds."""
        end = time.monotonic() + duration
        while time.monotonic() < end:
            self.publish_image(**image_kwargs)
            self.publish_joints(joints, stamp=joint_stamp)
            time.sleep(period)

    def feed_in_background(self, stop, joints=(0.1, -0.1, 0.2, 0.0), period=0.04):
        """Publish fresh images and joint states on a daemon thread until ``stop`` is set.

        One image and one joint state every ``period`` s; returns the (started) thread.
        """
        def run():
            while not stop.is_set():
                self.publish_image()
                self.publish_joints(joints)
                time.sleep(period)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def call(self, srv_type, name, request=None, timeout=30.0):
        """Call a service from the probe node and return its response."""
        client = self.probe.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise AssertionError(f'service {name} not available')
            future = client.call_async(request if request is not None else srv_type.Request())
            deadline = time.monotonic() + timeout
            while not future.done():
                if time.monotonic() > deadline:
                    raise AssertionError(f'service {name} did not answer in {timeout} s')
                time.sleep(0.01)
            return future.result()
        finally:
            self.probe.destroy_client(client)

    def set_params(self, node_name='/retain_policy', timeout=60.0, **values):
        """Set parameters through the node's SetParameters service (like ``ros2 param set``).

        Values are plain Python values or ``rclpy.parameter.Parameter`` objects (needed for empty
        arrays, whose type cannot be inferred).
        """
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request()
        request.parameters = [
            (v if isinstance(v, Parameter) else Parameter(k, value=v)).to_parameter_msg()
            for k, v in values.items()]
        return self.call(SetParameters, f'{node_name}/set_parameters', request, timeout).results

    def shutdown(self):
        self.executor.shutdown(timeout_sec=5)
        self.probe_executor.shutdown(timeout_sec=5)
        for node in list(self.nodes):
            node.destroy_node()
        self.nodes.clear()
        self.probe.destroy_node()
        self.context.try_shutdown()
        for thread in self._threads:
            thread.join(timeout=5)


@pytest.fixture
def ros_harness():
    """Yield a fresh rclpy context with a spinning probe node; shut down after the test."""
    pytest.importorskip('rclpy')
    harness = RosHarness()
    try:
        yield harness
    finally:
        harness.shutdown()


# --------------------------------------------------------------------------- the ``ros`` marker
#: modules whose use makes a test a ROS test (run once per ROS 2 distribution by .ci/run)
ROS_TEST_MODULES = ('rclpy', 'sensor_msgs', 'std_msgs', 'std_srvs', 'trajectory_msgs',
                    'diagnostic_msgs', 'rcl_interfaces', 'builtin_interfaces', 'lifecycle_msgs',
                    'launch', 'launch_ros', 'retain_ros.ros')
_ROS_MODULE_CACHE = {}


def _uses_ros(statements) -> bool:
    """Whether these AST statements import a ROS module or ``pytest.importorskip`` one."""
    import ast

    def is_ros(name):
        return any(name == m or name.startswith(m + '.') for m in ROS_TEST_MODULES)

    for node in (n for s in statements for n in ast.walk(s)):
        if isinstance(node, ast.Import) and any(is_ros(a.name) for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and is_ros(node.module):
            return True
        if isinstance(node, ast.Call) and getattr(node.func, 'attr', '') == 'importorskip' \
                and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) and is_ros(node.args[0].value):
            return True
    return False


def _module_uses_ros(path: str) -> bool:
    """Top-level statements of a test module (not its functions) use ROS."""
    import ast

    if path not in _ROS_MODULE_CACHE:
        with open(path, encoding='utf-8') as f:
            tree = ast.parse(f.read(), filename=path)
        top = [s for s in tree.body
               if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        _ROS_MODULE_CACHE[path] = _uses_ros(top)
    return _ROS_MODULE_CACHE[path]


def _function_uses_ros(function) -> bool:
    import ast
    import inspect
    import textwrap

    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError):
        return False
    return _uses_ros(ast.parse(source).body)


def pytest_collection_modifyitems(config, items):
    """Mark every test that uses rclpy (or the ROS message packages) with ``ros``.

    A test uses ROS when its module imports (or ``importorskip``s) a ROS module at top level,
    when its own body does, or when it takes the ``ros_harness`` fixture. ``.ci/run`` runs all
    tests on Kilted and the ``ros`` ones again on Jazzy (``-m ros``).
    """
    for item in items:
        if item.get_closest_marker('ros') is not None:
            continue
        path = str(getattr(item, 'path', getattr(item, 'fspath', '')))
        function = getattr(item, 'function', None)
        if 'ros_harness' in getattr(item, 'fixturenames', ()) \
                or (path.endswith('.py') and _module_uses_ros(path)) \
                or (function is not None and _function_uses_ros(function)):
            item.add_marker(pytest.mark.ros)


# ---- demo tests (test/demo/): quickly trained demo checkpoints, fresh tiny pi0 policies ----
@pytest.fixture(scope='session')
def trained(tmp_path_factory):
    """Return a demo directory with checkpoints from ``retain-ros demo-train --quick``.

    Tests that change it work on a copy.
    """
    import torch

    from retain_ros.demo import cli

    root = str(tmp_path_factory.mktemp('demo'))
    torch.set_num_threads(2)
    assert cli.main(['--quick', '--dir', root, '--no-progress']) == 0
    return root


@pytest.fixture
def fresh_policy(tmp_path):
    """Return ``make(settings, data)``: a fresh tiny pi0 and ``data`` as its tensors.

    The policy is initialised with seed 0 and carries ``data``'s statistics.
    """
    from retain_ros.demo.dataset import TensorDataset
    from retain_ros.demo.model import build_spec
    from retain_ros.demo.model import build_tokenizer
    from retain_ros.demo.model import compute_stats
    from retain_ros.policies.pi0 import Pi0Policy

    def make(settings, data):
        tok = build_tokenizer(str(tmp_path / 'tok'))
        policy = Pi0Policy.from_spec(build_spec(settings), tok, compute_stats(data, 'test'),
                                     init_weights=True, init_seed=0, noise_seed=0)
        return policy, TensorDataset(data, policy.processor)

    return make
