"""``retain-ros export BAGS... --out DIR``: recorded episodes as a LeRobot v3 dataset.

Finds the bag folders, reads each episode (:mod:`retain_ros.recording.episode_reader`: frames
resampled to the control rate, undecodable camera messages skipped and named), keeps the ones
asked for (ended episodes; ``--only-success``; ``--include-interrupted``) and writes them
(:mod:`retain_ros.recording.lerobot_writer`: the LeRobot ``v3.0`` layout).
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence

from retain_ros.recording import bag as B
from retain_ros.recording.episode_reader import ExportError
from retain_ros.recording.episode_reader import read_episode
from retain_ros.recording.lerobot_writer import LeRobotWriter


def export(bags: Sequence[str], out: str, fps: Optional[int] = None,
           only_success: bool = False, include_interrupted: bool = False,
           cameras: Optional[Dict[str, str]] = None,
           robot_type: Optional[str] = None, progress: bool = True) -> Dict[str, Any]:
    """Export bag folders (or folders of bags) into the LeRobot v3 dataset ``out``.

    :param bags: bag folders, or folders of bag folders.
    :param out: the dataset folder to create (new, or empty).
    :param fps: frames per second; None = the first episode's control rate.
    :param only_success: keep only episodes whose line says ``success: true``.
    :param include_interrupted: also keep episodes without an outcome: those that never ended
        and those the operator aborted (``~/abort_episode``; their ``success`` is ``None``).
    :param cameras: ``{topic: feature name}`` overrides of
        :func:`~retain_ros.recording.episode_reader.camera_key`.
    :param robot_type: ``robot_type`` of ``meta/info.json``.
    :param progress: show a progress bar.
    :return: ``meta/info.json``'s content plus ``skipped`` (``{bag: reason}``) and
        ``bad_frames`` (``{bag: [message, ...]}`` for the exported episodes: camera messages left
        out because they do not decode, see :mod:`~retain_ros.recording.episode_reader`).
    :raises ExportError: when no bag is found or none is left to export.
    """
    from tqdm import tqdm

    paths = B.find_bags(bags)
    if not paths:
        raise ExportError(f'no bag folder (with {B.METADATA_FILE}) in {list(bags)}')
    writer = LeRobotWriter(out, robot_type=robot_type)
    skipped: Dict[str, str] = {}
    bad_frames: Dict[str, List[str]] = {}
    for path in tqdm(paths, desc='export', unit='episode', disable=not progress):
        if only_success and _known_failure(path):
            skipped[path] = 'not a success'     # decided from metadata.yaml, nothing decoded
            continue
        episode = read_episode(path, fps=fps or writer.fps, cameras=cameras)
        if episode.line is None and not include_interrupted:
            skipped[path] = f'no episode line (status {episode.status}): the episode never ended'
        elif (episode.line or {}).get('aborted') and not include_interrupted:
            skipped[path] = 'aborted by the operator (not counted)'
        elif only_success and not (episode.line or {}).get('success'):
            skipped[path] = 'not a success'
        else:
            writer.add(episode)
            if episode.meta.get('bad_frames'):
                bad_frames[path] = list(episode.meta['bad_frames'])
    if not writer.episodes:
        raise ExportError(f'nothing to export: {skipped}')
    info = writer.finish()
    return dict(info, skipped=skipped, bad_frames=bad_frames)


def _known_failure(path: str) -> bool:
    """Tell whether the bag's metadata already holds an episode line that is not a success.

    A bag without readable metadata (e.g. interrupted) is decided after reading it.
    """
    try:
        line = B.episode_of(path)
    except Exception:  # noqa: B902 - unreadable metadata: read_episode repairs and decides
        return False
    return line is not None and not line.get('success')


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``retain-ros export``.

    :param argv: the arguments after ``export`` (``None``: ``sys.argv``).
    :return: the exit status: 0, or 1 when nothing could be exported.
    """
    parser = argparse.ArgumentParser(
        prog='retain-ros export',
        description='Recorded episode bags (rosbag2 MCAP, from the node\'s record parameter) '
                    'as a LeRobot v3 dataset (parquet with embedded PNG images, meta/info.json, '
                    'meta/stats.json, meta/tasks.parquet, meta/episodes/).')
    parser.add_argument('bags', nargs='+', help='bag folders, or folders of bag folders')
    parser.add_argument('--out', required=True, help='dataset folder to create')
    parser.add_argument('--fps', type=int, default=None,
                        help='frames per second (default: the control rate of the chunks)')
    parser.add_argument('--only-success', action='store_true',
                        help='keep only successful episodes')
    parser.add_argument('--include-interrupted', action='store_true',
                        help='also keep episodes without an outcome: never ended (crash) or '
                             'aborted by the operator')
    parser.add_argument('--camera', action='append', default=[], metavar='TOPIC=NAME',
                        help='feature name of a camera topic (observation.images.NAME)')
    parser.add_argument('--robot-type', default=None, help='robot_type of meta/info.json')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='[%(levelname)s] %(name)s: %(message)s')
    cameras = {}
    for item in args.camera:
        topic, sep, name = item.partition('=')
        if not sep or not topic or not name:
            parser.error(f'--camera {item!r}: use TOPIC=NAME')
        cameras[topic] = name
    try:
        info = export(args.bags, args.out, fps=args.fps, only_success=args.only_success,
                      include_interrupted=args.include_interrupted, cameras=cameras,
                      robot_type=args.robot_type)
    except (ExportError, B.BagError) as exc:
        print(f'retain-ros export: {exc}', file=sys.stderr)
        return 1
    for path, reason in info['skipped'].items():
        print(f'skipped {path}: {reason}')
    for path, notes in info['bad_frames'].items():
        for note in notes:
            print(f'skipped image: {note}')
    print(f'wrote {args.out}: {info["total_episodes"]} episode(s), {info["total_frames"]} '
          f'frames at {info["fps"]} fps, {info["total_tasks"]} task(s) (LeRobot '
          f'{info["codebase_version"]})')
    return 0
