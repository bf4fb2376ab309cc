"""``retain_ros.ros.tools.node_latency`` still measures the real node (a few samples, untimed).

The node ages its inputs by their header stamps and stamps each chunk with the observation
time; the benchmark once published synthetic stamps, the node held, and the benchmark could not
measure. This runs a few of its round trips against the real ``retain_policy`` node (tiny pi0,
one camera, rclpy graph): every sample must get the chunk made from exactly its messages, with
recording on as well (the bag must hold one camera frame per sample).
"""
import pytest

pytest.importorskip('rclpy')

from retain_ros.ros.tools import node_latency as NL  # noqa: E402

pytestmark = pytest.mark.ros


def test_sample_messages_share_one_stamp():
    """Joint state and every image carry the given stamp (ns), split into sec / nanosec."""
    import numpy as np

    images = [np.zeros((4, 4, 3), np.uint8)] * 2
    joints, msgs = NL.sample_messages(images, 1_700_000_000_123_456_789)
    for msg in [joints] + msgs:
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_700_000_000, 123_456_789)
    assert len(msgs) == 2 and list(joints.name) == list(NL.JOINTS)


@pytest.mark.parametrize('record', [None, 'jpeg'])
def test_every_sample_gets_its_chunk(record):
    rows, extra = NL.run(1, samples=4, warmup=1, record=record)
    # one sample may go stale before the 20 ms timer picks it up on a loaded machine
    assert extra['missed'] <= 1 and len(rows) == 4 - extra['missed']
    for row in rows:
        # the chunk came after the model ran on this sample's observation
        assert row['e2e'] > row['model'] > 0 and row['wait'] >= 0 and row['inbound'] > 0
        assert row['outbound'] > 0
        # reading the observation is the node's work: in the overhead, not in the timer wait
        assert row['observe'] > 0 and row['overhead'] > row['observe']
    if record:
        rec = extra['recording']
        assert 5 - extra['missed'] <= rec['frames'] <= 5
        assert rec['dropped'] == 0 and rec['bag_mib'] > 0


@pytest.mark.parametrize('separate_process', [False, True])
def test_transport_floor_echoes_every_sample(separate_process):
    """The floor's echo answers each sample, in this process and from a child process."""
    from retain_ros.ros.tools.transport_floor import run_floor

    rows = run_floor(2, samples=4, points=10, warmup=1, separate_process=separate_process)
    assert len(rows) == 4 and all(0 < ms < 2000 for ms in rows)
