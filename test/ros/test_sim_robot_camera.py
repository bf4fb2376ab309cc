"""The sim robot's camera output: JPEG ``CompressedImage`` frames and the image format check."""
import numpy as np
import pytest

pytest.importorskip('rclpy')


def test_sim_jpeg_camera_decodes_to_the_rendered_scene(ros_harness):
    """``image_format: jpeg``: CompressedImage on <camera_topic>/compressed, no raw stream."""
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CompressedImage

    from retain_ros.ros.conversions import to_rgb
    from retain_ros.ros.sim_robot.node import SimRobotNode

    node = SimRobotNode(context=ros_harness.context, parameter_overrides=[
        Parameter('image_format', value='jpeg'), Parameter('camera_rate', value=20.0),
        Parameter('jpeg_quality', value=95)])
    try:
        ros_harness.executor.add_node(node)
        frames = ros_harness.subscribe(CompressedImage, 'camera/image_raw/compressed')
        msg = frames.wait(count=1, timeout=30)[0]
        assert 'jpeg' in msg.format
        rgb = to_rgb(msg)
        expected = node.world.render()
        assert rgb.shape == expected.shape
        # lossy, but the same scene: mean error a few grey levels
        assert np.abs(rgb.astype(float) - expected.astype(float)).mean() < 6.0
        assert len(msg.data) < expected.nbytes / 3
        assert ros_harness.probe.count_publishers('/camera/image_raw') == 0
    finally:
        ros_harness.executor.remove_node(node)
        node.destroy_node()


def test_sim_refuses_an_unknown_image_format(ros_harness):
    from rclpy.parameter import Parameter

    from retain_ros.ros.sim_robot.node import SimRobotNode

    with pytest.raises(ValueError, match='image_format'):
        SimRobotNode(context=ros_harness.context,
                     parameter_overrides=[Parameter('image_format', value='png')])
