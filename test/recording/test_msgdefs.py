"""Message definitions from the installed ``.msg`` files (:mod:`retain_ros.recording.msgdefs`)."""
import pytest

pytest.importorskip('mcap_ros2')
pytest.importorskip('rosbags')

from retain_ros.recording.msgdefs import message_definition  # noqa: E402
from retain_ros.recording.msgdefs import MessageDefinitionError  # noqa: E402
from retain_ros.recording.msgdefs import split_type  # noqa: E402


def test_message_definitions_come_from_the_installed_files():
    text = message_definition('trajectory_msgs/msg/JointTrajectory')
    assert text.startswith('# The header')
    for dep in ('std_msgs/Header', 'trajectory_msgs/JointTrajectoryPoint',
                'builtin_interfaces/Time', 'builtin_interfaces/Duration'):
        assert f'\nMSG: {dep}\n' in text
    assert split_type('sensor_msgs/msg/Image') == split_type('sensor_msgs/Image')
    with pytest.raises(MessageDefinitionError, match='no_such_msgs'):
        message_definition('no_such_msgs/msg/Nothing')
