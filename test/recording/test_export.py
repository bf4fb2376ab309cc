"""``retain-ros export``: episode bags -> a LeRobot v3 dataset, read back as LeRobot reads it.

That is ``datasets.Dataset.from_parquet`` with the features of ``meta/info.json``, and pandas
for the tasks.
"""
import json
import os

import cv2
import numpy as np
import pytest

pytest.importorskip('mcap_ros2')
pytest.importorskip('rosbags')
pq = pytest.importorskip('pyarrow.parquet')
pd = pytest.importorskip('pandas')

from helpers.bags import cdr  # noqa: E402
from helpers.bags import compressed_image  # noqa: E402
from helpers.bags import header  # noqa: E402
from helpers.bags import joint_state  # noqa: E402
from helpers.bags import M  # noqa: E402
from helpers.bags import MS  # noqa: E402
from helpers.bags import rgb8_image  # noqa: E402
from helpers.bags import string  # noqa: E402
from helpers.bags import T0  # noqa: E402
from helpers.bags import trajectory  # noqa: E402

from retain_ros import cli  # noqa: E402
from retain_ros.recording import bag as B  # noqa: E402
from retain_ros.recording.episode_reader import camera_key  # noqa: E402
from retain_ros.recording.episode_reader import ExportError  # noqa: E402
from retain_ros.recording.episode_reader import read_episode  # noqa: E402
from retain_ros.recording.export import export  # noqa: E402

JOINTS = ['j0', 'j1']


def _image(value, side=8):
    pixels = np.zeros((side, side, 3), np.uint8)
    pixels[..., 0] = value
    pixels[0, 0] = (1, 2, 3)
    return rgb8_image(pixels)


def _compressed(value, fmt, side=8):
    """Return a ``CompressedImage`` of one red level, encoded as ``fmt`` (``jpeg``, ``png``)."""
    bgr = np.full((side, side, 3), (0, 0, value), np.uint8)
    ext = {'jpeg': '.jpg', 'png': '.png'}[fmt]
    return compressed_image(cv2.imencode(ext, bgr)[1].tobytes(), fmt)


def _jpeg(value, side=8):
    return _compressed(value, 'jpeg', side)


def _joints(k):
    return joint_state(list(reversed(JOINTS)), [-k, k])


def _chunk(c, dt=0.1, horizon=4):
    return trajectory(JOINTS, [[100.0 * c + i, -(100.0 * c + i)] for i in range(horizon)], dt)


def write_bag(path, success=True, instruction='touch the red block', frames=10,
              line=True, jpeg_wrist=True, wrist=None, camera=None, aborted=False):
    """Write a 1 s episode bag: camera, joints at 10 Hz, a 4-point chunk (dt 0.1 s) every 0.2 s.

    :param wrist: ``k -> CompressedImage`` for the wrist camera (default: a JPEG).
    :param camera: ``k -> Image`` for the main camera (default: :func:`_image`).
    """
    bag = B.BagWriter(str(path), custom_data={'retain_ros.start': json.dumps(
        {'episode_id': os.path.basename(str(path)), 'instruction': instruction})})
    bag.add_topic('/camera/image_raw', 'sensor_msgs/msg/Image')
    if jpeg_wrist:
        bag.add_topic('/wrist/image_raw/compressed', 'sensor_msgs/msg/CompressedImage')
    bag.add_topic('/joint_states', 'sensor_msgs/msg/JointState')
    bag.add_topic('/instruction', 'std_msgs/msg/String')
    bag.add_topic('/arm_controller/joint_trajectory', 'trajectory_msgs/msg/JointTrajectory')
    bag.write('/instruction', cdr(string(instruction)), T0)
    for k in range(frames):
        t = T0 + k * 100 * MS
        bag.write('/camera/image_raw', cdr((camera or (lambda i: _image(10 * i)))(k)), t)
        if jpeg_wrist:
            bag.write('/wrist/image_raw/compressed',
                      cdr((wrist or (lambda i: _jpeg(20 * i)))(k)), t)
        bag.write('/joint_states', cdr(_joints(k)), t)
        if k % 2 == 0:
            bag.write('/arm_controller/joint_trajectory', cdr(_chunk(k // 2)), t + MS)
    episode = {'episode_id': os.path.basename(str(path)), 'success': success,
               'instruction': instruction, 'alpha': {'vision': 0.5}, 'fingerprint': 'f00d'}
    if aborted:
        episode.update(success=None, aborted=True)
    bag.close(episode=episode if line else None)
    return str(path)


def _hf_features(info):
    """Build what LeRobot's get_hf_features_from_features builds from meta/info.json."""
    datasets = pytest.importorskip('datasets')
    out = {}
    for key, ft in info['features'].items():
        if ft['dtype'] == 'image':
            out[key] = datasets.Image()
        elif ft['shape'] == [1]:
            out[key] = datasets.Value(dtype=ft['dtype'])
        else:
            out[key] = datasets.Sequence(length=ft['shape'][0],
                                         feature=datasets.Value(dtype=ft['dtype']))
    return datasets.Features(out)


def test_camera_keys():
    assert camera_key('/wrist/image_raw/compressed') == 'wrist'
    assert camera_key('/camera/image_raw') == 'camera'
    assert camera_key('/robot/cam0/image_rect_color') == 'robot_cam0'


def test_frames_are_resampled_with_the_command_in_force(tmp_path):
    episode = read_episode(write_bag(tmp_path / 'ep'))
    assert episode.fps == 10 and episode.joint_names == JOINTS
    # every stream seen from t0 + 1 ms (the first chunk); frames 100 ms apart, until the
    # last camera frame at 0.9 s
    assert episode.length == 9
    # frame k sits at 1 ms + k * 100 ms: image k and joints k (reordered to the chunk's names)
    assert [int(f[1, 1, 0]) for f in episode.images['camera']] == [10 * k for k in range(9)]
    assert episode.state[3].tolist() == [3.0, -3.0]
    # action: point floor((t - t_chunk) * fps) of the latest chunk (one every 200 ms)
    assert episode.action[:, 0].tolist() == [0, 1, 100, 101, 200, 201, 300, 301, 400]
    assert episode.images['wrist'].shape == (9, 8, 8, 3)
    assert episode.images['wrist'][5, 4, 4, 0] > 80            # JPEG decoded to RGB (red)


def test_export_is_a_lerobot_v3_dataset(tmp_path):
    bags = tmp_path / 'bags'
    write_bag(bags / 'a', success=True)
    write_bag(bags / 'b', success=False, instruction='touch the blue block')
    write_bag(bags / 'c', line=False)                       # interrupted: never ended
    out = tmp_path / 'dataset'
    assert cli.main(['export', str(bags), '--out', str(out)]) == 0
    info = json.loads((out / 'meta' / 'info.json').read_text())
    assert info['codebase_version'] == 'v3.0' and info['fps'] == 10
    assert info['total_episodes'] == 2 and info['total_frames'] == 18
    assert info['total_tasks'] == 2 and info['splits'] == {'train': '0:2'}
    assert info['data_path'] == 'data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet'
    assert info['video_path'] is None
    features = info['features']
    assert features['observation.images.camera'] == {
        'dtype': 'image', 'shape': [8, 8, 3], 'names': ['height', 'width', 'channel']}
    assert features['action'] == {'dtype': 'float32', 'shape': [2], 'names': JOINTS}
    for key in ('timestamp', 'frame_index', 'episode_index', 'index', 'task_index'):
        assert features[key]['shape'] == [1]

    data_file = out / 'data' / 'chunk-000' / 'file-000.parquet'
    assert pq.ParquetFile(str(data_file)).num_row_groups == 2       # one per episode
    datasets = pytest.importorskip('datasets')
    ds = datasets.Dataset.from_parquet([str(data_file)], features=_hf_features(info))
    assert len(ds) == 18
    row = ds[12]
    assert row['episode_index'] == 1 and row['frame_index'] == 3 and row['index'] == 12
    assert row['action'] == [101.0, -101.0] and row['observation.state'] == [3.0, -3.0]
    assert abs(row['timestamp'] - 0.3) < 1e-6 and row['task_index'] == 1
    image = np.asarray(row['observation.images.camera'])        # PIL image, lossless PNG
    assert image.shape == (8, 8, 3) and image[1, 1, 0] == 30
    assert image[0, 0].tolist() == [1, 2, 3]
    assert [r['next.done'] for r in ds.select(range(9))] == [False] * 8 + [True]

    tasks = pd.read_parquet(out / 'meta' / 'tasks.parquet')
    assert tasks.loc['touch the red block'].task_index == 0
    assert tasks.loc['touch the blue block'].task_index == 1
    episodes = pd.read_parquet(out / 'meta' / 'episodes' / 'chunk-000' / 'file-000.parquet')
    assert episodes['length'].tolist() == [9, 9]
    assert episodes['dataset_from_index'].tolist() == [0, 9]
    assert episodes['dataset_to_index'].tolist() == [9, 18]
    assert episodes['success'].tolist() == [True, False]
    assert [list(t) for t in episodes['tasks']] == [
        ['touch the red block'], ['touch the blue block']]
    assert json.loads(episodes['alpha'][0]) == {'vision': 0.5}
    assert episodes['data/chunk_index'].tolist() == [0, 0]
    assert list(episodes['stats/action/max'][1]) == [400.0, 0.0]
    stats = json.loads((out / 'meta' / 'stats.json').read_text())
    assert stats['action']['min'] == [0.0, -400.0] and stats['action']['count'] == [18]
    assert set(stats['observation.state']) >= {'min', 'max', 'mean', 'std', 'count', 'q01',
                                               'q99'}
    assert np.asarray(stats['observation.images.camera']['mean']).shape == (3, 1, 1)
    assert 0.0 <= np.asarray(stats['observation.images.camera']['max']).max() <= 1.0


def test_aborted_episodes_are_left_out_unless_asked_for(tmp_path):
    bags = tmp_path / 'bags'
    write_bag(bags / 'a', success=False, jpeg_wrist=False)
    write_bag(bags / 'b', jpeg_wrist=False, aborted=True)
    info = export([str(bags)], str(tmp_path / 'out'), progress=False)
    assert info['total_episodes'] == 1
    assert info['skipped'] == {str(bags / 'b'): 'aborted by the operator (not counted)'}
    info = export([str(bags)], str(tmp_path / 'all'), include_interrupted=True, progress=False)
    assert info['total_episodes'] == 2


def test_export_filters_and_errors(tmp_path, capsys):
    bags = tmp_path / 'bags'
    write_bag(bags / 'a', success=True, jpeg_wrist=False)
    write_bag(bags / 'b', success=False, jpeg_wrist=False)
    info = export([str(bags)], str(tmp_path / 'ok'), only_success=True, progress=False)
    assert info['total_episodes'] == 1 and str(bags / 'b') in info['skipped']
    with pytest.raises(ExportError, match='not empty'):
        export([str(bags)], str(tmp_path / 'ok'), progress=False)
    write_bag(tmp_path / 'other' / 'c', jpeg_wrist=True)
    with pytest.raises(ExportError, match='differ'):
        export([str(bags / 'a'), str(tmp_path / 'other' / 'c')], str(tmp_path / 'mixed'),
               progress=False)
    empty = B.BagWriter(str(tmp_path / 'empty'))
    empty.add_topic('/joint_states', 'sensor_msgs/msg/JointState')
    empty.close(episode={'episode_id': 'e', 'success': True})
    assert cli.main(['export', str(tmp_path / 'empty'), '--out', str(tmp_path / 'x')]) == 1
    assert 'missing a camera topic' in capsys.readouterr().err


def _png(value, side=8):
    return _compressed(value, 'png', side)


def _bad_png(kind):
    """``huge``: a small PNG whose header claims 100000x100000; ``malformed``: no image data."""
    data = bytearray(cv2.imencode('.png', np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    if kind == 'huge':
        data[16:20] = (100000).to_bytes(4, 'big')
        data[20:24] = (100000).to_bytes(4, 'big')
    else:
        data = data[:33]
    return compressed_image(bytes(data), 'png')


def _wrist_with(bad):
    return lambda k: _bad_png(bad[k]) if k in bad else _png(20 * k)


def test_undecodable_frames_are_skipped_and_named(tmp_path, capsys):
    bags = tmp_path / 'bags'
    path = write_bag(bags / 'ep', wrist=_wrist_with({3: 'huge', 6: 'malformed'}))
    episode = read_episode(path)
    # same timeline as a clean bag; a bad frame takes the latest good image before it
    assert episode.length == 9
    assert [int(f[4, 4, 0]) for f in episode.images['wrist']] == \
        [0, 20, 40, 40, 80, 100, 100, 140, 160]
    assert [int(f[1, 1, 0]) for f in episode.images['camera']] == [10 * k for k in range(9)]
    assert episode.action[:, 0].tolist() == [0, 1, 100, 101, 200, 201, 300, 301, 400]
    bad = episode.meta['bad_frames']
    assert len(bad) == 2
    assert path in bad[0] and '/wrist/image_raw/compressed message 3' in bad[0]
    assert f'log time {T0 + 300 * MS} ns' in bad[0] and '0.300 s' in bad[0]
    assert '100000x100000: sides above 16384' in bad[0]
    assert 'message 6' in bad[1] and 'cannot decode 33 bytes as png' in bad[1]

    out = tmp_path / 'dataset'
    assert cli.main(['export', str(bags), '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count('skipped image: ') == 2 and '100000x100000' in printed
    info = json.loads((out / 'meta' / 'info.json').read_text())
    assert info['total_episodes'] == 1 and info['total_frames'] == 9
    table = pq.read_table(str(out / 'data' / 'chunk-000' / 'file-000.parquet')).to_pydict()
    wrist = [cv2.imdecode(np.frombuffer(c['bytes'], np.uint8), cv2.IMREAD_COLOR)[4, 4, 2]
             for c in table['observation.images.wrist']]
    assert [int(v) for v in wrist] == [0, 20, 40, 40, 80, 100, 100, 140, 160]
    assert table['frame_index'] == list(range(9))
    episodes = pd.read_parquet(out / 'meta' / 'episodes' / 'chunk-000' / 'file-000.parquet')
    assert episodes['skipped_images'].tolist() == [2]


def test_leading_bad_frames_drop_those_timesteps_for_every_feature(tmp_path):
    path = write_bag(tmp_path / 'ep', wrist=_wrist_with({0: 'malformed'}),
                     camera=lambda k: (_image(10 * k) if k != 4 else
                                       M['sensor_msgs/msg/Image'](
                                           header=header(), height=8, width=8,
                                           encoding='16UC1', is_bigendian=0, step=16,
                                           data=np.zeros(128, np.uint8))))
    episode = read_episode(path)
    # no wrist image at the first timestep: the episode starts one frame later, all features
    assert episode.length == 8
    assert [int(f[4, 4, 0]) for f in episode.images['wrist']] == [20 * k for k in range(1, 9)]
    assert [int(f[1, 1, 0]) for f in episode.images['camera']] == [10, 20, 30, 30, 50, 60, 70,
                                                                   80]
    assert episode.state[0].tolist() == [1.0, -1.0]
    assert episode.action[:, 0].tolist() == [1, 100, 101, 200, 201, 300, 301, 400]
    assert len(episode.meta['bad_frames']) == 2
    assert any('/camera/image_raw message 4' in b and "'16UC1'" in b
               for b in episode.meta['bad_frames'])


def test_a_camera_without_any_good_frame_is_an_error(tmp_path):
    path = write_bag(tmp_path / 'ep', wrist=lambda k: _bad_png('huge'))
    with pytest.raises(ExportError, match=r'no frame where every camera has a decodable image '
                                          r'\(9 message\(s\) skipped'):
        read_episode(path)
