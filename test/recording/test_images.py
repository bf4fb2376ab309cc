"""The shared image decoder (:mod:`retain_ros.recording.images`).

Encodings, header checks, caps, and the node's conversions going through it.
"""
import array
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from retain_ros.recording import images
from retain_ros.recording.images import check_compressed
from retain_ros.recording.images import compressed_dimensions
from retain_ros.recording.images import compressed_to_rgb
from retain_ros.recording.images import ImageDecodeError
from retain_ros.recording.images import MAX_SIDE
from retain_ros.recording.images import message_to_rgb
from retain_ros.recording.images import raw_to_rgb

RNG = np.random.default_rng(3)
RGB = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)


def _png(pixels_bgr):
    return cv2.imencode('.png', pixels_bgr)[1].tobytes()


def png_claiming(width, height, pixels=None):
    """Return a small valid PNG whose IHDR is then patched to claim ``width`` x ``height``."""
    data = bytearray(_png(np.zeros((4, 4, 3), np.uint8) if pixels is None else pixels))
    data[16:20] = int(width).to_bytes(4, 'big')
    data[20:24] = int(height).to_bytes(4, 'big')
    return bytes(data)


def malformed_png():
    """PNG signature and a plausible IHDR (8x8), then no image data."""
    return _png(np.zeros((8, 8, 3), np.uint8))[:33]


def _jpeg_claiming(width, height):
    data = bytearray(cv2.imencode('.jpg', np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    sof = data.index(b'\xff\xc0')
    data[sof + 5:sof + 7] = int(height).to_bytes(2, 'big')
    data[sof + 7:sof + 9] = int(width).to_bytes(2, 'big')
    return bytes(data)


def _raw(pixels, pad=0):
    h = pixels.shape[0]
    rows = pixels.reshape(h, -1)
    if pad:
        rows = np.concatenate([rows, np.zeros((h, pad), np.uint8)], axis=1)
    return rows.tobytes(), rows.shape[1]


@pytest.mark.parametrize('encoding,pixels', [
    ('rgb8', RGB),
    ('bgr8', RGB[..., ::-1]),
    ('rgba8', np.concatenate([RGB, np.full(RGB.shape[:2] + (1,), 7, np.uint8)], axis=2)),
    ('bgra8', np.concatenate([RGB[..., ::-1], np.zeros(RGB.shape[:2] + (1,), np.uint8)], 2)),
    ('RGB8', RGB),
])
@pytest.mark.parametrize('pad', [0, 3])
def test_raw_encodings_give_rgb(encoding, pixels, pad):
    data, step = _raw(np.ascontiguousarray(pixels), pad)
    out = raw_to_rgb(data, encoding, 6, 5, step)
    assert out.dtype == np.uint8 and out.shape == RGB.shape
    np.testing.assert_array_equal(out, RGB)


def test_mono8_and_buffer_types():
    gray = np.ascontiguousarray(RGB[..., 0])
    for data in (gray.tobytes(), bytearray(gray.tobytes()), memoryview(gray.tobytes()),
                 array.array('B', gray.tobytes()), gray.reshape(-1)):
        out = raw_to_rgb(data, 'mono8', 6, 5, 5)
        assert out.shape == (6, 5, 3)
        for c in range(3):
            np.testing.assert_array_equal(out[..., c], gray)


def test_raw_result_does_not_alias_the_data():
    data = bytearray(RGB.tobytes())
    out = raw_to_rgb(data, 'rgb8', 6, 5, 15)
    data[0] = (int(data[0]) + 1) % 256
    assert out[0, 0, 0] == RGB[0, 0, 0]


@pytest.mark.parametrize('change,match', [
    (dict(encoding='16UC1'), 'unsupported image encoding'),
    (dict(step=10), 'step 10 is smaller'),
    (dict(height=7), 'data has 90 bytes'),
    (dict(width=0), 'bad image size'),
    (dict(height=MAX_SIDE + 1), 'bad image size'),
    (dict(width=100000, height=100000, step=300000), 'bad image size'),
    (dict(data=RGB.tobytes()[:-1]), 'data has 89 bytes'),
])
def test_malformed_raw_images_raise(change, match):
    fields = dict(data=RGB.tobytes(), encoding='rgb8', height=6, width=5, step=15)
    fields.update(change)
    with pytest.raises(ImageDecodeError, match=match):
        raw_to_rgb(**fields)


def test_compressed_jpeg_and_png():
    bgr = np.ascontiguousarray(RGB[..., ::-1])
    np.testing.assert_array_equal(compressed_to_rgb(_png(bgr), 'png'), RGB)
    jpeg = cv2.imencode('.jpg', np.full((16, 16, 3), (0, 0, 200), np.uint8))[1].tobytes()
    out = compressed_to_rgb(jpeg, 'rgb8; jpeg compressed bgr8')
    assert out.shape == (16, 16, 3) and out[8, 8, 0] > 150 and out[8, 8, 2] < 50
    gray = compressed_to_rgb(_png(RGB[..., 0].copy()), '')          # format guessed: png
    np.testing.assert_array_equal(gray[..., 1], RGB[..., 0])
    rgba = np.concatenate([bgr, np.full((6, 5, 1), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(compressed_to_rgb(_png(rgba), 'png'), RGB)
    deep = compressed_to_rgb(_png(bgr.astype(np.uint16) << 8), 'png')   # 16-bit png
    np.testing.assert_array_equal(deep, RGB)
    assert compressed_dimensions(jpeg) == (16, 16)
    assert compressed_dimensions(np.frombuffer(_png(bgr), np.uint8)) == (5, 6)


@pytest.mark.parametrize('data,fmt,match', [
    (png_claiming(100000, 100000), 'png', r'100000x100000: sides above 16384'),
    (png_claiming(MAX_SIDE + 1, 4), 'png', 'sides above'),
    (png_claiming(0, 4), 'png', 'sides above'),
    (_jpeg_claiming(40000, 8), 'jpeg', r'40000x8: sides above'),
    (b'', 'png', 'no data'),
    (b'not an image at all', 'png', 'no PNG / JPEG image size'),
    (b'\x89PNG\r\n\x1a\n', 'png', 'no PNG / JPEG image size'),
    (_png(np.zeros((4, 4, 3), np.uint8)), 'tiff', 'unsupported compressed format'),
])
def test_compressed_refused_before_decoding(data, fmt, match, monkeypatch):
    def no_decode(*args):
        raise AssertionError('the decoder was reached')

    monkeypatch.setattr(images.cv2, 'imdecode', no_decode)
    with pytest.raises(ImageDecodeError, match=match):
        check_compressed(data, fmt)
    with pytest.raises(ImageDecodeError, match=match):
        compressed_to_rgb(data, fmt)


def test_payload_cap(monkeypatch):
    data = _png(np.zeros((4, 4, 3), np.uint8))
    check_compressed(data, 'png')
    monkeypatch.setattr(images, 'MAX_COMPRESSED_BYTES', len(data) - 1)
    with pytest.raises(ImageDecodeError, match=f'{len(data)} bytes exceeds {len(data) - 1}'):
        compressed_to_rgb(data, 'png')


def test_malformed_payload_is_an_error_not_a_crash():
    with pytest.raises(ImageDecodeError, match='cannot decode 33 bytes as png'):
        compressed_to_rgb(malformed_png(), 'png')


def test_message_objects_dispatch_on_their_fields():
    data, step = _raw(RGB)
    raw = SimpleNamespace(data=data, encoding='rgb8', height=6, width=5, step=step,
                          is_bigendian=0)
    np.testing.assert_array_equal(message_to_rgb(raw), RGB)
    comp = SimpleNamespace(data=_png(np.ascontiguousarray(RGB[..., ::-1])), format='png')
    np.testing.assert_array_equal(message_to_rgb(comp), RGB)
    with pytest.raises(ImageDecodeError, match='sides above'):
        message_to_rgb(SimpleNamespace(data=png_claiming(100000, 100000), format='png'),
                       compressed=True)


def test_node_conversions_use_the_same_decoder_and_limits():
    from retain_ros.ros import conversions

    assert conversions.MAX_SIDE == images.MAX_SIDE
    assert conversions.RAW_ENCODINGS is images.RAW_ENCODINGS
    assert conversions.MAX_COMPRESSED_BYTES == images.MAX_COMPRESSED_BYTES
    big = SimpleNamespace(data=png_claiming(100000, 100000), format='png')
    with pytest.raises(conversions.ConversionError, match='100000x100000: sides above'):
        conversions.check_compressed(big)
    with pytest.raises(conversions.ConversionError, match='100000x100000'):
        conversions.to_rgb(big)
    with pytest.raises(conversions.ConversionError, match='cannot decode'):
        conversions.to_rgb(SimpleNamespace(data=malformed_png(), format='png'))
    raw = SimpleNamespace(data=RGB.tobytes(), encoding='mono16', height=6, width=5, step=15)
    with pytest.raises(conversions.ConversionError, match='unsupported image encoding'):
        conversions.to_rgb(raw)
    raw.encoding = 'rgb8'
    np.testing.assert_array_equal(conversions.to_rgb(raw), RGB)
