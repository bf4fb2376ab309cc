"""launch/policy.launch.py: static checks always; a launch_testing run when launch_ros imports."""
import ast
import importlib.util
import os
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH_FILE = os.path.join(ROOT, 'launch', 'policy.launch.py')
ARGUMENTS = {'pretrained', 'finetuned', 'alpha', 'device', 'tokenizer_path', 'keep_sources',
             'embodiment', 'params_file', 'namespace'}
LAUNCH_SKIP = ('launch_ros is not installed (no ROS 2 install: it is on no package registry '
               'here); the static checks above still ran. Run it after colcon build on a '
               'machine with ROS 2')


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


def test_launch_file_ends_the_launch_when_the_node_fails():
    tree = _tree()
    handlers = list(_calls(tree, 'OnProcessExit'))
    assert handlers, 'no OnProcessExit handler on the node'
    keywords = {k.arg: k.value for k in handlers[0].keywords}
    assert isinstance(keywords.get('on_exit'), ast.Name)
    assert keywords['on_exit'].id == 'on_node_exit'
    assert list(_calls(tree, 'RegisterEventHandler'))


def _load_module():
    spec = importlib.util.spec_from_file_location('policy_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_overrides_only_for_given_arguments():
    pytest.importorskip('launch_ros', reason=LAUNCH_SKIP)
    module = _load_module()
    assert module.parameter_overrides('', '', '', '') == {}
    assert module.parameter_overrides('/p', '/a, /b', '0.75', 'cuda', '/tok', 'host') == {
        'pretrained_path': '/p', 'finetuned_paths': ['/a', '/b'], 'alpha': 0.75,
        'device': 'cuda', 'tokenizer_path': '/tok', 'keep_sources': 'host'}
    assert module.parameter_overrides('', '', '', '', embodiment=' droid ') == {
        'embodiment': 'droid'}


def _installed_or_skip():
    pytest.importorskip('launch_ros', reason=LAUNCH_SKIP)
    pytest.importorskip('launch_testing', reason='launch_testing is not installed')
    from ament_index_python.packages import get_package_prefix
    try:
        prefix = get_package_prefix('retain_ros')
    except Exception as exc:  # noqa: B902 - PackageNotFoundError: not built with colcon
        pytest.skip(f'retain_ros is not installed in an ament prefix ({exc}); colcon build first')
    if not os.path.exists(os.path.join(prefix, 'lib', 'retain_ros', 'policy_node')):
        pytest.skip('lib/retain_ros/policy_node is not installed; colcon build first')


def _service(arguments):
    import launch
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    description = launch.LaunchDescription([launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(LAUNCH_FILE), launch_arguments=arguments.items())])
    service = launch.LaunchService()
    service.include_launch_description(description)
    return service


def test_launch_starts_node(tiny_pi0_checkpoints):
    """Launch the real file and wait for ~/merge_state.

    ``LaunchService.run`` must run on the MAIN thread (the real launch refuses any other); the
    rclpy probe runs in a thread and shuts the launch down once it saw the node's merge state.
    """
    _installed_or_skip()
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy
    from rclpy.qos import QoSProfile
    from std_msgs.msg import String

    pre, ft = tiny_pi0_checkpoints
    service = _service({'pretrained': pre, 'finetuned': ft, 'alpha': '0.25', 'device': 'cpu',
                        'keep_sources': 'host', 'namespace': 'launch_test'})
    got = []

    def probe():
        context = Context()
        rclpy.init(context=context)
        node = rclpy.create_node('launch_test_probe', context=context)
        qos = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        node.create_subscription(String, '/launch_test/retain_policy/merge_state',
                                 lambda m: got.append(m.data), qos)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        try:
            deadline = time.monotonic() + 90
            while not got and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.2)
        finally:
            executor.shutdown()
            node.destroy_node()
            context.try_shutdown()
            service.shutdown()

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    service.run()                       # main thread
    thread.join(timeout=30)
    assert got, 'the launched node never published ~/merge_state'
    assert '0.25' in got[0]


def test_launch_ends_non_zero_when_the_node_fails(tmp_path):
    _installed_or_skip()
    service = _service({'pretrained': str(tmp_path), 'finetuned': str(tmp_path / 'missing'),
                        'device': 'cpu'})
    t0 = time.monotonic()
    code = service.run()                # main thread; the node exits 1 at startup
    assert code != 0, 'ros2 launch would exit 0 although the node failed at startup'
    assert time.monotonic() - t0 < 120
