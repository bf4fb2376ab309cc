"""The ``sim_robot`` node's parameters: one table of names, defaults and descriptors.

Read-only parameters need a restart; the others (``task``, ``split``, ``seed``, timeouts, the
episode switches) apply at the next reset or physics step.
"""
from __future__ import annotations

from rcl_interfaces.msg import FloatingPointRange
from rcl_interfaces.msg import IntegerRange
from rcl_interfaces.msg import ParameterDescriptor
from retain_ros.sim.tasks import NEW_TASK


def descriptor(description: str, read_only: bool = False, float_range=None,
               int_range=None) -> ParameterDescriptor:
    """Return a ``ParameterDescriptor`` of the sim's parameters (ranges inclusive, any step)."""
    desc = ParameterDescriptor(description=description, read_only=read_only)
    if float_range is not None:
        desc.floating_point_range = [FloatingPointRange(
            from_value=float(float_range[0]), to_value=float(float_range[1]), step=0.0)]
    if int_range is not None:
        desc.integer_range = [IntegerRange(
            from_value=int(int_range[0]), to_value=int(int_range[1]), step=0)]
    return desc


#: name -> (default, descriptor), in the order ``--help`` lists them
PARAMETERS = {
    'task': (NEW_TASK, descriptor(
        'task name (reach_red, reach_yellow, ...) or its instruction; used at the next reset')),
    'split': ('', descriptor(
        "scene distribution: generalist | new_id | new_ood; empty = the task's first split; "
        'used at the next reset')),
    'seed': (0, descriptor('scene seed; used at the next reset', int_range=(0, 2 ** 31 - 1))),
    'image_size': (96, descriptor('camera image side in pixels', read_only=True,
                                  int_range=(16, 1024))),
    'physics_rate': (50.0, descriptor('physics steps and joint_states per second',
                                      read_only=True, float_range=(1.0, 1000.0))),
    'camera_rate': (10.0, descriptor('camera images (and ~/success) per second',
                                     read_only=True, float_range=(0.1, 120.0))),
    'trajectory_topic': ('/arm_controller/joint_trajectory', descriptor(
        'trajectory_msgs/JointTrajectory input (joint_trajectory_controller)', read_only=True)),
    'command_topic': ('/forward_position_controller/commands', descriptor(
        'std_msgs/Float64MultiArray direct position targets (forward controller)',
        read_only=True)),
    # the extra command interfaces and the gripper (:mod:`.commands`)
    'velocity_command_topic': ('/forward_velocity_controller/commands', descriptor(
        'std_msgs/Float64MultiArray joint velocities, rad/s, one per arm joint (forward '
        'velocity controller)', read_only=True)),
    'velocity_timeout': (0.5, descriptor(
        'seconds after the last velocity command before the velocities go to zero; 0 = never '
        "(ros2_control's forward_command_controller has no timeout)", float_range=(0.0, 3600.0))),
    'joint_command_topic': ('joint_command', descriptor(
        'sensor_msgs/JointState position targets by joint name (arm joints and the gripper)',
        read_only=True)),
    'twist_topic': ('/servo_node/delta_twist_cmds', descriptor(
        'geometry_msgs/TwistStamped gripper velocity (linear x, y in m/s, base frame; z and '
        'angular ignored), MoveIt Servo style', read_only=True)),
    'twist_timeout': (0.1, descriptor(
        "seconds without a twist before the arm stops (MoveIt Servo's "
        'incoming_command_timeout)', float_range=(0.001, 60.0))),
    'gripper_command_topic': ('/gripper_controller/commands', descriptor(
        'std_msgs/Float64MultiArray gripper position target, one value in m (0 = open, '
        '0.04 = closed)', read_only=True)),
    'gripper_states_topic': ('gripper/joint_states', descriptor(
        'sensor_msgs/JointState output of the gripper joint (not in joint_states)',
        read_only=True)),
    # outputs
    'joint_states_topic': ('joint_states', descriptor(
        "sensor_msgs/JointState output: the arm's joints only", read_only=True)),
    'camera_topic': ('camera/image_raw', descriptor('sensor_msgs/Image (rgb8) output',
                                                    read_only=True)),
    'camera_frame_id': ('camera', descriptor('frame_id of the images', read_only=True)),
    'image_format': ('raw', descriptor(
        'raw: sensor_msgs/Image (rgb8) on camera_topic; jpeg: sensor_msgs/CompressedImage on '
        'compressed_topic (what a robot sends over Wi-Fi)', read_only=True)),
    'compressed_topic': ('', descriptor(
        'CompressedImage topic of image_format jpeg; empty = <camera_topic>/compressed '
        "(image_transport's name)", read_only=True)),
    'jpeg_quality': (90, descriptor('JPEG quality of image_format jpeg', read_only=True,
                                    int_range=(1, 100))),
    'instruction_topic': ('instruction', descriptor(
        "std_msgs/String output, transient local: the scene's instruction", read_only=True)),
    'publish_instruction': (True, descriptor('publish the instruction after each reset')),
    # evaluation episodes (:mod:`.episodes`)
    'auto_end_episode': (False, descriptor(
        'after a reset, call <policy_node>/end_episode with the outcome once the task succeeds '
        'or episode_timeout passes')),
    'policy_node': ('/retain_policy', descriptor(
        'node whose end_episode service auto_end_episode calls', read_only=True)),
    'episode_timeout': (30.0, descriptor('seconds after a reset before an episode fails',
                                         float_range=(0.1, 3600.0))),
    'reset_on_start': (True, descriptor('draw the first scene when the node starts',
                                        read_only=True)),
}
