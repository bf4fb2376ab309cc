"""Package-level rules: layering, packaging, Python 3.10 syntax, the CLI entry point."""
import ast
import glob
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PURE_PACKAGES = ('merging', 'policies', 'control', 'runtime', 'sim', 'evaluation', 'demo',
                 'recording', 'embodiment')
ROS_MODULES = ('rclpy', 'sensor_msgs', 'std_msgs', 'std_srvs', 'trajectory_msgs',
               'diagnostic_msgs', 'rcl_interfaces', 'builtin_interfaces', 'launch', 'launch_ros')


def _imported_modules(path):
    tree = ast.parse(open(path, encoding='utf-8').read(), filename=path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split('.')[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split('.')[0]


@pytest.mark.parametrize('package', PURE_PACKAGES)
def test_pure_layers_never_import_ros(package):
    files = glob.glob(os.path.join(ROOT, 'retain_ros', package, '**', '*.py'), recursive=True)
    assert files, f'retain_ros/{package} has no modules'
    offenders = [f'{os.path.relpath(f, ROOT)} imports {m}'
                 for f in files for m in _imported_modules(f) if m in ROS_MODULES]
    assert not offenders, offenders


def test_lower_layers_never_import_ros_layer():
    offenders = []
    for package in PURE_PACKAGES:
        for f in glob.glob(os.path.join(ROOT, 'retain_ros', package, '**', '*.py'),
                           recursive=True):
            text = open(f, encoding='utf-8').read()
            if 'retain_ros.ros' in text:
                offenders.append(os.path.relpath(f, ROOT))
    assert not offenders, f'modules below ros/ import retain_ros.ros: {offenders}'


def test_python310_syntax():
    """The code must stay Python 3.10 compatible (ROS 2 Humble)."""
    candidates = sorted(glob.glob('/root/.pyenv/versions/3.10*/bin/python3')) + \
        [p for p in (shutil.which('python3.10'),) if p]
    if not candidates:
        pytest.skip('no Python 3.10 interpreter on this machine')
    files = [f for p in ('retain_ros', 'launch', 'benchmarks')
             for f in glob.glob(os.path.join(ROOT, p, '**', '*.py'), recursive=True)]
    code = ('import ast, sys\n'
            'for f in sys.argv[1:]:\n'
            '    ast.parse(open(f, encoding="utf-8").read(), filename=f)\n')
    result = subprocess.run([candidates[0], '-c', code, *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_setup_installs_ros_files():
    """setup.py must install what `ros2 run` and `ros2 launch` look for."""
    text = open(os.path.join(ROOT, 'setup.py'), encoding='utf-8').read()
    for needle in ("'resource/' + package_name", 'package.xml', 'launch/*.launch.py',
                   'config/*.yaml', 'policy_node = ', 'sim_robot = ', 'retain-ros = '):
        assert needle in text, needle
    cfg = open(os.path.join(ROOT, 'setup.cfg'), encoding='utf-8').read()
    assert 'install_scripts=$base/lib/retain_ros' in cfg
    assert os.path.isfile(os.path.join(ROOT, 'resource', 'retain_ros'))
    assert glob.glob(os.path.join(ROOT, 'launch', '*.launch.py'))
    assert glob.glob(os.path.join(ROOT, 'config', '*.yaml'))
    assert 'torchvision' not in text


def test_cli_lists_every_command(capsys):
    from retain_ros import cli
    assert cli.main(['--help']) == 0
    out = capsys.readouterr().out
    for name in ('merge', 'inspect', 'node', 'sim', 'demo-train', 'demo', 'report', 'export'):
        assert f'  {name} ' in out
    assert 'weight on the finetuned' in out
    assert cli.main(['no-such-command']) == 2


def test_every_cli_command_module_exists():
    import importlib
    from retain_ros import cli
    for name, (module, func, _) in cli.COMMANDS.items():
        if module.startswith('retain_ros.ros.'):
            pytest.importorskip('rclpy')
        mod = importlib.import_module(module)
        assert callable(getattr(mod, func)), f'{name}: {module}.{func} missing'
