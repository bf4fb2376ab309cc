"""The threaded bag recorder (:mod:`retain_ros.recording.recorder`): queue bound, drop counts."""
import numpy as np
import pytest

pytest.importorskip('mcap_ros2')
pytest.importorskip('rosbags')

from helpers.bags import read_rosbags  # noqa: E402
from helpers.bags import rgb8_image  # noqa: E402
from helpers.bags import T0  # noqa: E402
from helpers.bags import TOPICS  # noqa: E402

from retain_ros.recording.recorder import ThreadedBagRecorder  # noqa: E402


def test_full_queue_drops_and_counts(tmp_path):
    """A burst faster than the writer: the bounded queue drops frames and counts them."""
    big = rgb8_image(np.full((256, 256, 3), 7, np.uint8), ns=5 * 10 ** 9, frame_id='camera')
    rec = ThreadedBagRecorder(str(tmp_path / 'burst'), TOPICS, max_queue_bytes=len(big.data))
    accepted = sum(rec.put('/camera/image_raw', T0 + i, big, len(big.data)) for i in range(300))
    stats = rec.stop()
    rec.close()
    assert stats['dropped'] > 0
    assert stats['dropped_by_topic']['/camera/image_raw'] == stats['dropped']
    assert accepted + stats['dropped'] == 300
    assert stats['messages'] == accepted
    assert stats['max_queue_mb'] <= len(big.data) / 2 ** 20 + 1e-3
    _, msgs = read_rosbags(str(tmp_path / 'burst'))
    assert len(msgs) == accepted
