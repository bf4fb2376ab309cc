"""Message conversions and the safety filter (no ROS graph needed, only message classes)."""
import cv2
import numpy as np
import pytest

pytest.importorskip('sensor_msgs')

from sensor_msgs.msg import CompressedImage  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from retain_ros.ros.conversions import compressed_to_rgb  # noqa: E402
from retain_ros.ros.conversions import ConversionError  # noqa: E402
from retain_ros.ros.conversions import image_to_rgb  # noqa: E402
from retain_ros.ros.conversions import is_compressed_topic  # noqa: E402
from retain_ros.ros.conversions import joint_state_to_vector  # noqa: E402
from retain_ros.ros.conversions import rgb_to_image  # noqa: E402
from retain_ros.ros.conversions import sec_to_duration  # noqa: E402
from retain_ros.control.safety import make_safe  # noqa: E402
from retain_ros.control.safety import SafetyLimits  # noqa: E402
from retain_ros.control.safety import UnsafeChunkError  # noqa: E402

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)


def _raw(pixels, encoding, pad=0):
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1)
    if pad:
        rows = np.concatenate([rows, np.zeros((h, pad), np.uint8)], axis=1)
    msg = Image(height=h, width=w, encoding=encoding, step=rows.shape[1])
    msg.data = rows.tobytes()
    return msg


@pytest.mark.parametrize('encoding,pixels', [
    ('rgb8', RGB),
    ('bgr8', RGB[..., ::-1]),
    ('rgba8', np.concatenate([RGB, np.full(RGB.shape[:2] + (1,), 7, np.uint8)], axis=2)),
    ('bgra8', np.concatenate([RGB[..., ::-1], np.zeros(RGB.shape[:2] + (1,), np.uint8)], 2)),
])
@pytest.mark.parametrize('pad', [0, 3])
def test_raw_encodings_give_rgb(encoding, pixels, pad):
    out = image_to_rgb(_raw(np.ascontiguousarray(pixels), encoding, pad))
    assert out.dtype == np.uint8 and out.shape == RGB.shape
    np.testing.assert_array_equal(out, RGB)


def test_mono8_becomes_three_equal_channels():
    gray = RGB[..., 0].copy()
    out = image_to_rgb(_raw(gray, 'mono8'))
    assert out.shape == gray.shape + (3,)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


@pytest.mark.parametrize('change,match', [
    (dict(encoding='16UC1'), 'unsupported image encoding'),
    (dict(step=10), 'step 10 is smaller'),
    (dict(height=7), 'data has'),
    (dict(width=0), 'bad image size'),
])
def test_malformed_images_raise(change, match):
    msg = _raw(RGB, 'rgb8')
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(ConversionError, match=match):
        image_to_rgb(msg)


def test_truncated_data_raises():
    msg = _raw(RGB, 'rgb8')
    msg.data = bytes(msg.data)[:-1]
    with pytest.raises(ConversionError, match='data has'):
        image_to_rgb(msg)


def test_rgb_to_image_round_trip():
    for encoding in ('rgb8', 'bgr8'):
        np.testing.assert_array_equal(image_to_rgb(rgb_to_image(RGB, encoding=encoding)), RGB)


@pytest.mark.parametrize('ext,fmt', [('.png', 'png'), ('.png', 'rgb8; png compressed bgr8'),
                                     ('.jpg', 'jpeg')])
def test_compressed_images_decode(ext, fmt):
    image = np.zeros((16, 16, 3), np.uint8)
    image[:8] = (255, 0, 0)  # red top half (RGB)
    ok, data = cv2.imencode(ext, image[..., ::-1])
    assert ok
    msg = CompressedImage(format=fmt)
    msg.data = data.tobytes()
    out = compressed_to_rgb(msg)
    assert out.shape == (16, 16, 3)
    if ext == '.png':
        np.testing.assert_array_equal(out, image)
    else:
        assert out[2, 2, 0] > 200 and out[2, 2, 2] < 60


@pytest.mark.parametrize('fmt,data,match', [
    ('jpeg', b'not an image', 'cannot decode'),
    ('jpeg', b'', 'no data'),
    ('tiff', b'xx', 'unsupported compressed format'),
])
def test_bad_compressed_images_raise(fmt, data, match):
    msg = CompressedImage(format=fmt)
    msg.data = data
    with pytest.raises(ConversionError, match=match):
        compressed_to_rgb(msg)


def test_compressed_topic_convention():
    assert is_compressed_topic('camera/image_raw/compressed')
    assert not is_compressed_topic('camera/image_raw')


def test_joint_state_reordered_by_names():
    msg = JointState(name=['b', 'x', 'a'], position=[2.0, 9.0, 1.0])
    np.testing.assert_array_equal(joint_state_to_vector(msg, ['a', 'b']), [1.0, 2.0])
    np.testing.assert_array_equal(joint_state_to_vector(msg, []), [2.0, 9.0, 1.0])
    with pytest.raises(ConversionError, match="lacks joint"):
        joint_state_to_vector(msg, ['a', 'c'])
    with pytest.raises(ConversionError, match='names but'):
        joint_state_to_vector(JointState(name=['a'], position=[1.0, 2.0]), ['a'])
    with pytest.raises(ConversionError, match='non-finite'):
        joint_state_to_vector(JointState(name=['a'], position=[float('nan')]), ['a'])


def test_duration():
    d = sec_to_duration(1.25)
    assert (d.sec, d.nanosec) == (1, 250_000_000)


# ---------------------------------------------------------------------- safety
def test_non_finite_chunk_rejected():
    chunk = np.zeros((4, 2))
    chunk[2, 1] = np.nan
    with pytest.raises(UnsafeChunkError, match='non-finite'):
        make_safe(chunk, np.zeros(2), SafetyLimits())
    chunk[2, 1] = np.inf
    with pytest.raises(UnsafeChunkError):
        make_safe(chunk, np.zeros(2), SafetyLimits())


def test_wrong_width_rejected():
    with pytest.raises(UnsafeChunkError, match='expected 3'):
        make_safe(np.zeros((4, 2)), None, SafetyLimits(), dim=3)


def test_clamped_to_limits():
    chunk = np.array([[5.0, -5.0], [0.5, 0.1]])
    out = make_safe(chunk, None, SafetyLimits(lower=(-1.0, -2.0), upper=(1.0, 2.0)))
    np.testing.assert_array_equal(out, [[1.0, -2.0], [0.5, 0.1]])


def test_step_limit_chained_from_current_state():
    chunk = np.tile(np.array([[1.0, -1.0]]), (5, 1))
    out = make_safe(chunk, np.zeros(2), SafetyLimits(max_step=0.1))
    expected = np.array([[0.1 * (i + 1), -0.1 * (i + 1)] for i in range(5)])
    np.testing.assert_allclose(out, expected)
    assert np.all(np.abs(np.diff(np.vstack([np.zeros(2), out]), axis=0)) <= 0.1 + 1e-12)


def test_state_outside_limits_ramps_in_at_max_step():
    # state first, then step, then limits (see test/control/test_safety.py)
    out = make_safe(np.zeros((3, 1)), np.array([5.0]), SafetyLimits(upper=(1.0,), max_step=0.1))
    np.testing.assert_allclose(out[:, 0], [4.9, 4.8, 4.7])


def test_limits_validation():
    with pytest.raises(ValueError, match='differ in length'):
        SafetyLimits(lower=(0.0,), upper=(1.0, 2.0)).validate()
    with pytest.raises(ValueError, match='above its upper'):
        SafetyLimits(lower=(2.0,), upper=(1.0,)).validate()
    with pytest.raises(ValueError, match='robot has 2 joint'):
        SafetyLimits(lower=(0.0,)).validate(dim=2)
    SafetyLimits(lower=(0.0, 0.0), upper=(1.0, 1.0), max_step=0.1).validate(dim=2)
