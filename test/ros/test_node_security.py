"""Who may change α: the claims of docs/security.md checked against the installed ROS wheels.

- Whether the wheels' Fast DDS has the DDS-Security plugins (read from the library itself). The
  PyPI wheels have not; the doc says so, and these tests fail when that changes, so that the doc
  and a denied-caller test with a real keystore get written.
- Without the plugins, ``ROS_SECURITY_ENABLE=true`` with the enclave's directory in the keystore
  refuses to start a node (fails closed) with rmw_fastrtps' message, ``Enforce`` and
  ``Permissive`` alike; without the directory ``Enforce`` refuses and ``Permissive`` starts
  unsecured.
- Domain isolation: a client on another ``ROS_DOMAIN_ID`` does not find a node's
  ``set_parameters``; one on the same domain finds it and sets a parameter.
"""
import glob
import os
import subprocess
import sys
import threading
import uuid

import pytest

pytest.importorskip('rclpy')

from rcl_interfaces.msg import Parameter  # noqa: E402
from rcl_interfaces.msg import ParameterType  # noqa: E402
from rcl_interfaces.msg import ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, 'docs', 'security.md')
#: what docs/security.md says about the wheels (checked against the library)
DOC_CLAIM = 'built **without the DDS-Security plugins**'
#: only in Fast DDS's ``#else`` branch of ``#if HAVE_SECURITY`` (ParticipantProxyData.cpp)
NO_SECURITY_MARK = b'Received PID_IDENTITY_TOKEN but security is disabled'
#: names of the built-in security plugins, only in a ``SECURITY=ON`` build
PLUGIN_MARKS = (b'builtin.PKI-DH', b'builtin.Access-Permissions', b'builtin.AES-GCM-GMAC')
#: rmw_fastrtps' error when asked for security without the plugins
RMW_REFUSAL = "doesn't have the security libraries"


def _venv_lib(pattern):
    """Paths matching ``pattern`` in the running virtual environment's ``lib`` (real files)."""
    found = glob.glob(os.path.join(sys.prefix, 'lib', pattern))
    return sorted({os.path.realpath(p) for p in found})


def _fastdds_library():
    """The Fast DDS shared library of the wheels (Kilted: libfastdds, Jazzy: libfastrtps)."""
    libs = _venv_lib('libfastdds.so*') or _venv_lib('libfastrtps.so*')
    if not libs:
        pytest.skip(f'no libfastdds / libfastrtps in {sys.prefix}/lib (not the PyPI wheels)')
    return libs[0]


def _has_security_plugins(path):
    """Whether the Fast DDS library at ``path`` was built with the security plugins."""
    with open(path, 'rb') as f:
        data = f.read()
    plugins = [m for m in PLUGIN_MARKS if m in data]
    disabled = NO_SECURITY_MARK in data
    if plugins and not disabled:
        return True
    if disabled and not plugins:
        return False
    pytest.fail(f'{path}: cannot tell whether it has the security plugins '
                f'(plugin names {plugins}, "security is disabled" branch {disabled})')


@pytest.fixture(scope='module')
def security_plugins():
    """``(library path, whether it has the DDS-Security plugins)``."""
    path = _fastdds_library()
    return path, _has_security_plugins(path)


def test_doc_states_what_the_wheels_have(security_plugins):
    path, has_plugins = security_plugins
    with open(DOC, encoding='utf-8') as f:
        doc = f.read()
    if has_plugins:
        pytest.fail(f'{path} now has the DDS-Security plugins but docs/security.md says the '
                    'wheels are built without them: update the doc and add a denied-caller test '
                    'with a real keystore here')
    assert DOC_CLAIM in ' '.join(doc.split())


def test_rmw_was_built_without_security(security_plugins):
    _, has_plugins = security_plugins
    if has_plugins:
        pytest.skip('the Fast DDS of these wheels has the security plugins')
    rmw = _venv_lib('librmw_fastrtps_shared_cpp.so*')
    assert rmw, f'no librmw_fastrtps_shared_cpp in {sys.prefix}/lib'
    with open(rmw[0], 'rb') as f:
        data = f.read()
    assert RMW_REFUSAL.encode() in data
    assert b'dds.sec.auth.plugin' not in data


_PROBE = '''
import sys
import rclpy
try:
    rclpy.init(args=sys.argv[1:])
    node = rclpy.create_node('retain_security_probe')
except Exception as exc:
    print('REFUSED', exc, flush=True)
    sys.exit(3)
print('STARTED', node.get_fully_qualified_name(), flush=True)
node.destroy_node()
rclpy.shutdown()
'''


def _probe(keystore, strategy, *ros_args):
    env = dict(os.environ, ROS_SECURITY_ENABLE='true', ROS_SECURITY_STRATEGY=strategy,
               ROS_SECURITY_KEYSTORE=str(keystore))
    env.pop('ROS_SECURITY_ENCLAVE_OVERRIDE', None)
    return subprocess.run([sys.executable, '-c', _PROBE, *ros_args], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize('strategy,enclave_dir,expected', [
    ('Enforce', True, RMW_REFUSAL),
    ('Permissive', True, RMW_REFUSAL),
    ('Enforce', False, 'does not exist'),
    ('Permissive', False, 'STARTED /retain_security_probe'),
])
def test_security_env_without_plugins(security_plugins, tmp_path, strategy, enclave_dir,
                                      expected):
    """Fails closed whenever the enclave is there; only Permissive without it runs unsecured."""
    _, has_plugins = security_plugins
    if has_plugins:
        pytest.skip('the Fast DDS of these wheels has the security plugins')
    if enclave_dir:
        (tmp_path / 'enclaves' / 'retain' / 'operator').mkdir(parents=True)
    run = _probe(tmp_path, strategy, '--ros-args', '--enclave', '/retain/operator')
    out = run.stdout + run.stderr
    assert run.returncode == (0 if expected.startswith('STARTED') else 3), out
    assert expected in out, out


def _context(domain_id):
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    return context


def _set_request(name, value):
    request = SetParameters.Request()
    request.parameters = [Parameter(name=name, value=ParameterValue(
        type=ParameterType.PARAMETER_DOUBLE, double_value=value))]
    return request


def test_other_domain_cannot_reach_set_parameters():
    domain = int(os.environ.get('ROS_DOMAIN_ID', '0'))
    other = (domain + 37) % 101
    name = f'retain_policy_{uuid.uuid4().hex[:8]}'
    contexts = [_context(domain), _context(domain), _context(other)]
    server_executor = SingleThreadedExecutor(context=contexts[0])
    spinner = None
    try:
        server = rclpy.create_node(name, context=contexts[0])
        server.declare_parameter('alpha', 0.75)
        server_executor.add_node(server)
        spinner = threading.Thread(target=server_executor.spin, daemon=True)
        spinner.start()
        service = f'/{name}/set_parameters'

        insider = rclpy.create_node('retain_operator', context=contexts[1])
        client = insider.create_client(SetParameters, service)
        assert client.wait_for_service(timeout_sec=20.0), 'same domain: service not found'
        executor = SingleThreadedExecutor(context=contexts[1])
        executor.add_node(insider)
        future = client.call_async(_set_request('alpha', 0.6))
        executor.spin_until_future_complete(future, timeout_sec=20.0)
        assert future.done() and future.result().results[0].successful
        assert server.get_parameter('alpha').value == pytest.approx(0.6)

        outsider = rclpy.create_node('retain_outsider', context=contexts[2])
        stranger = outsider.create_client(SetParameters, service)
        assert not stranger.wait_for_service(timeout_sec=3.0), \
            f'a client on ROS_DOMAIN_ID={other} found {service} of domain {domain}'
        assert server.get_parameter('alpha').value == pytest.approx(0.6)
    finally:
        server_executor.shutdown(timeout_sec=5.0)
        if spinner is not None:
            spinner.join(timeout=5.0)
        for context in contexts:
            context.try_shutdown()
