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
             'embodiment', 'params_file', 'namespace', 'console', 'console_host',
             'console_port'}
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
        found = {k.arg: k.value for k in call.keywords}
        if getattr(found.get('name'), 'value', None) == 'retain_policy':   # not the console
            keywords.update(found)
    for key, value in (('package', 'retain_ros'), ('executable', 'policy_node'),
                       ('name', 'retain_policy')):
        assert isinstance(keywords.get(key), ast.Constant) and keywords[key].value == value
    assert 'parameters' in keywords and 'namespace' in keywords
    text = open(LAUNCH_FILE, encoding='utf-8').read()
    assert "get_package_share_directory" in text and "'policy.yaml'" in text


def test_launch_file_starts_the_console_on_request():
    names = {getattr(k.value, 'value', None) for call in _calls(_tree(), 'Node')
             for k in call.keywords if k.arg in ('executable', 'name')}
    assert {'console', 'retain_console'} <= names
    body = [n for n in _tree().body
            if isinstance(n, ast.FunctionDef) and n.name == 'console_arguments']
    helpers = {}
    exec(compile(ast.Module(body=body, type_ignores=[]), LAUNCH_FILE, 'exec'), helpers)
    assert helpers['console_arguments']('', '', '') == [
        '--node', '/retain_policy', '--host', '127.0.0.1', '--port', '8765']
    assert helpers['console_arguments']('/arm', '0.0.0.0', '9000') == [
        '--node', '/arm/retain_policy', '--host', '0.0.0.0', '--port', '9000']


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


# --------------------------------------------------------------------------- node exit statuses
EXIT_HELPERS = ('STOP_SIGNALS', 'exit_signal', 'exit_kind', 'is_startup_failure')


def _exit_helpers():
    """The launch file's exit-status helpers, run without ``launch``: only they and the plain
    ``import`` statements of the file are compiled (the helpers use the standard library only).
    """
    body = []
    for node in _tree().body:
        if isinstance(node, ast.Import):
            body.append(node)
        elif isinstance(node, ast.FunctionDef) and node.name in EXIT_HELPERS:
            body.append(node)
        elif isinstance(node, ast.Assign) and any(
                getattr(t, 'id', None) in EXIT_HELPERS for t in node.targets):
            body.append(node)
    namespace = {}
    exec(compile(ast.Module(body=body, type_ignores=[]), LAUNCH_FILE, 'exec'), namespace)
    missing = [name for name in EXIT_HELPERS if name not in namespace]
    assert not missing, f'{missing} not defined at the top level of the launch file'
    return namespace


@pytest.mark.parametrize('returncode, kind', [
    (0, 'ok'), (None, 'ok'),
    (1, 'failed'), (2, 'failed'), (128, 'failed'), (255, 'failed'),
    (-2, 'stopped'), (130, 'stopped'), (-15, 'stopped'), (143, 'stopped'), (-9, 'stopped'),
    (137, 'stopped'), (-1, 'stopped'),
    (-11, 'crashed'), (139, 'crashed'), (-6, 'crashed'), (134, 'crashed'),
])
def test_node_exit_classification(returncode, kind):
    """Only a positive non-signal status is a startup failure; Ctrl-C (-2, 130) and the launch's
    SIGTERM (-15, 143) are stops, a SIGSEGV a crash."""
    helpers = _exit_helpers()
    assert helpers['exit_kind'](returncode) == kind
    assert helpers['is_startup_failure'](returncode) is (kind == 'failed')


def test_on_node_exit_ends_the_launch_only_on_failures():
    # (not importorskip('launch'): the repository's launch/ folder imports as a namespace package)
    pytest.importorskip('launch_ros', reason=LAUNCH_SKIP)
    module = _load_module()

    class Action:
        name = 'retain_policy-1'

    class Event:
        action = Action()

        def __init__(self, returncode):
            self.returncode = returncode

    for code in (0, -2, 130, -15, 143):
        assert module.on_node_exit(Event(code), None) is None, code
    for code, words in ((1, 'startup failure'), (-11, 'SIGSEGV')):
        actions = module.on_node_exit(Event(code), None)
        assert actions, code
        text = ''.join(getattr(part, 'text', str(part)) for part in actions[0].msg)
        assert words in text, text
