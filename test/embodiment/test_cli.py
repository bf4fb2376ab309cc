"""``retain-ros embodiment show | list`` (``embodiment/cli.py``)."""
import os

from retain_ros.embodiment.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_cli_show_list_and_bad_file(capsys, tmp_path):
    assert main(['show', 'droid']) == 0
    out = capsys.readouterr().out
    for words in ('embodiment droid', 'joint_velocity', 'velocity_stream on '
                  '/joint_velocity_controller/commands', 'right_wrist_0_rgb <- empty'):
        assert words in out
    assert main(['show', 'joints']) == 0
    assert 'joint names: from the first JointState' in capsys.readouterr().out
    assert main(['show', 'joints', '--param', 'joint_names=[a, b]',
                 '--param', 'output_mode=stream']) == 0
    out = capsys.readouterr().out
    assert 'position_stream' in out and 'a, b' in out
    assert main(['list']) == 0
    assert 'aloha' in capsys.readouterr().out.split()
    bad = tmp_path / 'bad.yaml'
    droid = os.path.join(ROOT, 'config', 'embodiments', 'droid.yaml')
    bad.write_text(open(droid, encoding='utf-8').read()
                   .replace('kind: joint_velocity', 'kind: joint_vel'))
    assert main(['show', str(bad)]) == 2
    err = capsys.readouterr().err
    assert 'bad.yaml: actions[0].kind: unknown kind' in err and len(err.strip().splitlines()) == 1
    assert main(['show', 'nope']) == 2


def test_package_cli_routes_embodiment(capsys):
    from retain_ros import cli
    assert cli.main(['embodiment', 'show', 'so101']) == 0
    assert 'so101' in capsys.readouterr().out
