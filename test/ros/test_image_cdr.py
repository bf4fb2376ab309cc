"""Camera messages read from their serialized bytes equal rclpy's deserialization."""
import struct

import numpy as np
import pytest

pytest.importorskip('rclpy')

from rclpy.serialization import serialize_message  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from retain_ros.ros.conversions import ConversionError  # noqa: E402
from retain_ros.ros.conversions import rgb_to_image  # noqa: E402
from retain_ros.ros.conversions import to_rgb  # noqa: E402
from retain_ros.ros.image_cdr import parse_camera  # noqa: E402

RGB = np.random.default_rng(3).integers(0, 256, (5, 7, 3), dtype=np.uint8)


def _image(encoding='rgb8', frame='camera_optical', pad=0):
    msg = rgb_to_image(RGB, encoding=encoding)
    if pad:
        rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, -1)
        msg.data = np.pad(rows, ((0, 0), (0, pad))).tobytes()
        msg.step += pad
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1_700_000_123, 456_789
    msg.header.frame_id = frame
    return msg


@pytest.mark.parametrize('encoding,frame,pad', [('rgb8', 'camera_optical', 0),
                                                ('bgr8', '', 0), ('rgb8', 'ab', 3),
                                                ('bgr8', 'abc', 1)])
def test_image_fields_and_pixels_match_rclpy(encoding, frame, pad):
    msg = _image(encoding, frame, pad)
    view, parsed = parse_camera(serialize_message(msg), Image)
    assert parsed
    assert (view.header.stamp.sec, view.header.stamp.nanosec) == (1_700_000_123, 456_789)
    assert view.header.frame_id == frame
    assert (view.height, view.width, view.encoding, view.step) == (5, 7, encoding, msg.step)
    assert bytes(view.data) == bytes(msg.data)
    np.testing.assert_array_equal(to_rgb(view), RGB)
    np.testing.assert_array_equal(to_rgb(view), to_rgb(msg))


def test_unpadded_rgb8_is_a_read_only_view_without_copy():
    data = serialize_message(_image())
    out = to_rgb(parse_camera(data, Image)[0])
    assert not out.flags.writeable and not out.flags.owndata
    assert np.shares_memory(out, np.frombuffer(data, np.uint8))
    # an rclpy message's writable array.array is copied: the image must not alias it
    msg = _image()
    copied = to_rgb(msg)
    assert copied.flags.writeable and not np.shares_memory(
        copied, np.frombuffer(msg.data, np.uint8))


def test_read_only_image_feeds_the_policy_preprocessing_unchanged():
    from retain_ros.policies.images import to_unit_float

    view = to_rgb(parse_camera(serialize_message(_image()), Image)[0])
    assert not view.flags.writeable
    np.testing.assert_array_equal(to_unit_float(view).numpy(), to_unit_float(RGB.copy()).numpy())


def test_compressed_fields_match_rclpy():
    msg = CompressedImage(format='rgb8; jpeg compressed bgr8', data=b'\xff\xd8abc')
    msg.header.frame_id = 'wrist'
    msg.header.stamp.sec = 42
    view, parsed = parse_camera(serialize_message(msg), CompressedImage)
    assert parsed and view.format == msg.format and bytes(view.data) == b'\xff\xd8abc'
    assert view.header.frame_id == 'wrist' and view.header.stamp.sec == 42


def test_big_endian_cdr_is_read():
    body = struct.pack('>iI', 3, 9) + struct.pack('>I', 1) + b'\x00' + b'\x00' * 3
    body += struct.pack('>II', 1, 1) + struct.pack('>I', 5) + b'rgb8\x00' + b'\x00'
    body += b'\x00' * 2 + struct.pack('>I', 3) + struct.pack('>I', 3) + bytes([1, 2, 3])
    view, parsed = parse_camera(b'\x00\x00\x00\x00' + body, Image)
    assert parsed and view.header.stamp.sec == 3 and view.encoding == 'rgb8'
    np.testing.assert_array_equal(to_rgb(view), np.array([[[1, 2, 3]]], np.uint8))


def test_truncated_bytes_are_refused_and_other_encapsulations_deserialized(monkeypatch):
    import rclpy.serialization

    data = serialize_message(_image())
    with pytest.raises(ConversionError, match='past its end'):
        parse_camera(data[:-10], Image)
    with pytest.raises(ConversionError, match='ends inside'):
        parse_camera(data[:10], Image)
    # not plain CDR (XCDR2 here): handed to rclpy's deserializer, not read by hand
    seen = []
    monkeypatch.setattr(rclpy.serialization, 'deserialize_message',
                        lambda raw, kind: seen.append((raw, kind)) or 'deserialized')
    other = b'\x00\x07' + data[2:]
    assert parse_camera(other, Image) == ('deserialized', False)
    assert seen == [(other, Image)]
