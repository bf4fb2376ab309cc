"""launch/policy.launch.py: static checks always; a launch_testing run when launch_ros imports."""
import ast
import importlib.util
import os
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH_FILE = os.path.join(ROOT, 'launch', 'policy.launch.py')
ARGUMENTS = {'pretrained', 'finetuned', 'alpha', 'device', 'params_file', 'namespace'}


def _tree():
    with open(LAUNCH_FILE, encoding='utf-8') as handle:
        source = handle.read()
    compile(source, LAUNCH_FILE, 'exec')
    return ast.parse(source, filename=LAUNCH_FILE)


def _calls(tree, name):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, 'attr', '')
            if called == name:
                yield node


def test_launch_file_compiles_and_declares_its_arguments():
    tree = _tree()
    declared = {c.args[0].value for c in _calls(tree, 'DeclareLaunchArgument')
                if c.args and isinstance(c.args[0], ast.Constant)}
    assert declared == ARGUMENTS
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert 'generate_launch_description' in functions


def test_launch_file_starts_the_policy_node():
    keywords = {}
    for call in _calls(_tree(), 'Node'):
        keywords.update({k.arg: k.value for k in call.keywords})
    for key, value in (('package', 'retain_ros'), ('executable', 'policy_node'),
                       ('name', 'retain_policy')):
        assert isinstance(keywords.get(key), ast.Constant) and keywords[key].value == value
    assert 'parameters' in keywords and 'namespace' in keywords
    text = open(LAUNCH_FILE, encoding='utf-8').read()
    assert "get_package_share_directory" in text and "'policy.yaml'" in text


def _load_module():
    spec = importlib.util.spec_from_file_location('policy_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_overrides_only_for_given_arguments():
    pytest.importorskip('launch_ros', reason='launch_ros is not installed (no ROS 2 install); '
                        'the static checks above still ran')
    module = _load_module()
    assert module.parameter_overrides('', '', '', '') == {}
    assert module.parameter_overrides('/p', '/a, /b', '0.75', 'cuda') == {
        'pretrained_path': '/p', 'finetuned_paths': ['/a', '/b'], 'alpha': 0.75,
        'device': 'cuda'}


def test_launch_starts_node(tiny_pi0_checkpoints):
    """Launch the real file with launch_testing's LaunchService and wait for ~/merge_state."""
    pytest.importorskip('launch_ros', reason='launch_ros is not installed (no ROS 2 install); '
                        'run this test after colcon build on a machine with ROS 2')
    pytest.importorskip('launch_testing', reason='launch_testing is not installed')
    from ament_index_python.packages import get_package_prefix
    try:
        prefix = get_package_prefix('retain_ros')
    except Exception as exc:  # PackageNotFoundError: not built with colcon
        pytest.skip(f'retain_ros is not installed in an ament prefix ({exc}); colcon build first')
    if not os.path.exists(os.path.join(prefix, 'lib', 'retain_ros', 'policy_node')):
        pytest.skip('lib/retain_ros/policy_node is not installed; colcon build first')
    import launch
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    import rclpy
    from rclpy.qos import DurabilityPolicy
    from rclpy.qos import QoSProfile
    from std_msgs.msg import String

    pre, ft = tiny_pi0_checkpoints
    description = launch.LaunchDescription([launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(LAUNCH_FILE),
        launch_arguments={'pretrained': pre, 'finetuned': ft, 'alpha': '0.25',
                          'device': 'cpu', 'namespace': 'launch_test'}.items())])
    service = launch.LaunchService()
    service.include_launch_description(description)
    runner = threading.Thread(target=service.run, daemon=True)
    runner.start()
    rclpy.init()
    node = rclpy.create_node('launch_test_probe')
    got = []
    qos = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(String, '/launch_test/retain_policy/merge_state',
                             lambda m: got.append(m.data), qos)
    try:
        deadline = time.monotonic() + 90
        while not got and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.2)
        assert got, 'the launched node never published ~/merge_state'
        assert '0.25' in got[0]
    finally:
        node.destroy_node()
        rclpy.shutdown()
        service.shutdown()
        runner.join(timeout=30)
