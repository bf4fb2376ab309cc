"""Episode recording for the ``retain_policy`` node (parameter ``record``): one bag per episode.

Every episode between ``~/start_episode`` and ``~/end_episode`` becomes one rosbag2 bag in MCAP
storage, ``<record_dir>/<episode_id>/`` (``metadata.yaml`` + ``<episode_id>_0.mcap``; format in
:mod:`retain_ros.recording.bag`), with the policy's camera inputs, joint states, instruction,
every published command (chunks on ``output_topic``, or ``~/preview`` when ``dry_run``),
``~/merge_state`` and ``/diagnostics``. The episode's JSON line (alpha per group, fingerprint,
outcome, the recording's own counts) is stored as ``custom_data['retain_ros.episode']`` and as an
MCAP metadata record; what was known at the start (episode id, instruction, alpha, fingerprint)
as ``custom_data['retain_ros.start']``, so an interrupted bag still says which weights ran.

How: the recorder adds its own subscriptions to those topics on the node, with ``raw=True``:
rclpy hands over the CDR bytes as they came off the wire (no deserialization, nothing
re-serialized: the bag holds exactly what the node and the controller received; rclpy's
``serialize_message`` on the Kilted wheels pads some types, e.g. ``JointState``, with trailing
bytes that strict CDR readers reject, so it is used only for re-encoded JPEG images). Each
callback only appends the bytes to the bounded queue of a
:class:`~retain_ros.recording.recorder.ThreadedBagRecorder`, whose own thread writes them; when
the disk cannot keep up, frames are dropped and counted (``recording.dropped`` in the episode
line). Latched topics (instruction, merge state) are kept while no episode runs and written first
in every bag. With ``record_jpeg_quality`` > 0, raw ``sensor_msgs/Image`` cameras are stored
JPEG-encoded as ``sensor_msgs/CompressedImage`` on ``<topic>/compressed`` (encoded on the writer
thread), bounding the bag size.

API used by the node (all of it; keep the node's hooks to these calls)::

    recorder = NodeRecorder(node, cfg)      # cfg: the node's parameter dict; when cfg['record']
    recorder.start(episode_id, start_info)  # in ~/start_episode, after the episode log's start
    stats = recorder.stop()                 # in ~/end_episode: final counts (a dict) ...
    line = episodes.end(success, recording=stats)   # ... go into the episode's JSON line
    recorder.close(line)                    # the line goes into the bag; the bag is finished
    recorder.shutdown()                     # node teardown: closes a running bag

At construction, bags in ``record_dir`` left unfinished by a crash are repaired
(:func:`retain_ros.recording.bag.repair_bag`).
"""
from __future__ import annotations

import json
import os
import threading
import time
from typing import Any
from typing import Dict
from typing import List
from typing import Mapping
from typing import Optional
from typing import Tuple

import cv2
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import DurabilityPolicy
from rclpy.qos import HistoryPolicy
from rclpy.qos import QoSProfile
from rclpy.qos import ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage
from sensor_msgs.msg import Image
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from retain_ros.recording.bag import find_bags
from retain_ros.recording.bag import qos_profile
from retain_ros.recording.bag import repair_bag
from retain_ros.recording.bag import STATUS_INTERRUPTED
from retain_ros.recording.bag import STATUS_KEY
from retain_ros.recording.msgdefs import ros_type_name
from retain_ros.recording.recorder import DEFAULT_MAX_QUEUE_BYTES
from retain_ros.recording.recorder import ThreadedBagRecorder
from retain_ros.ros.conversions import image_to_rgb
from retain_ros.ros.conversions import is_compressed_topic

#: default bag folder under ``$ROS_HOME``
DEFAULT_RECORD_DIR = 'retain_ros/bags'

_SENSOR = QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST,
                     reliability=ReliabilityPolicy.BEST_EFFORT)
_RELIABLE = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                       reliability=ReliabilityPolicy.RELIABLE)
_LATCHED = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def default_record_dir() -> str:
    """``$ROS_HOME/retain_ros/bags`` (``~/.ros`` when ROS_HOME is unset)."""
    home = os.environ.get('ROS_HOME') or os.path.join('~', '.ros')
    return os.path.abspath(os.path.expanduser(os.path.join(home, DEFAULT_RECORD_DIR)))


def _raw(data: bytes) -> Tuple[bytes, None]:
    return data, None


class _JpegEncoder:
    """Raw CDR ``sensor_msgs/Image`` -> CDR ``sensor_msgs/CompressedImage`` (JPEG)."""

    def __init__(self, quality: int):
        self.params = [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)]

    def __call__(self, data: bytes) -> Tuple[bytes, None]:
        msg = deserialize_message(data, Image)
        bgr = cv2.cvtColor(image_to_rgb(msg), cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode('.jpg', bgr, self.params)
        if not ok:
            raise ValueError('JPEG encoding failed')
        out = CompressedImage(header=msg.header, format='bgr8; jpeg compressed bgr8')
        out.data = buf.tobytes()
        return serialize_message(out), None


class NodeRecorder:
    """Records the node's episodes (see the module docstring for the API).

    :param node: the ``retain_policy`` node (its subscriptions are added to it).
    :param cfg: the node's parameters (``camera_topics``, ``joint_states_topic``,
        ``instruction_topic``, ``output_topic``, ``output_mode``, ``dry_run``, ``record_dir``,
        ``record_jpeg_quality``, ``record_max_queue_mb``).
    """

    def __init__(self, node, cfg: Mapping[str, Any]):
        self._node = node
        self._logger = node.get_logger()
        self.record_dir = os.path.abspath(os.path.expanduser(
            str(cfg.get('record_dir') or '') or default_record_dir()))
        quality = int(cfg.get('record_jpeg_quality', 0) or 0)
        self._max_bytes = int(float(cfg.get('record_max_queue_mb', 0) or 0) * 2 ** 20) \
            or DEFAULT_MAX_QUEUE_BYTES
        self._lock = threading.Lock()
        self._bag: Optional[ThreadedBagRecorder] = None
        self._latched: Dict[str, Tuple[int, bytes]] = {}
        # bag topic -> (type name, qos profiles, encoder); wire topic -> bag topic
        self._topics: Dict[str, Tuple[str, List[Dict[str, Any]], Any]] = {}
        self._flush_topics: List[str] = []
        self._subscriptions: List[Any] = []
        out_type = JointTrajectory if cfg.get('output_mode') == 'trajectory' \
            else Float64MultiArray
        entries = []
        for topic in cfg['camera_topics']:
            compressed = is_compressed_topic(topic)
            entries.append((topic, CompressedImage if compressed else Image, _SENSOR,
                            not compressed and quality > 0))
        entries += [(cfg['joint_states_topic'], JointState, _SENSOR, False),
                    (cfg['instruction_topic'], String, _LATCHED, False),
                    (cfg['output_topic'] if not cfg.get('dry_run') else '~/preview', out_type,
                     _RELIABLE, False),
                    ('~/merge_state', String, _LATCHED, False),
                    ('/diagnostics', DiagnosticArray, _RELIABLE, False)]
        for topic, msg_type, qos, jpeg in entries:
            self._add(topic, msg_type, qos, quality if jpeg else 0,
                      flush=msg_type is out_type and qos is _RELIABLE)
        self._repair_leftovers()
        self._logger.info(
            f'recording every episode to {self.record_dir}/<episode_id>/ (rosbag2, mcap): '
            f'{", ".join(sorted(self._topics))}'
            + (f'; cameras as JPEG (quality {quality})' if quality > 0 else ''))

    def _add(self, topic: str, msg_type, qos: QoSProfile, jpeg_quality: int,
             flush: bool) -> None:
        name = self._node.resolve_topic_name(topic)
        latched = qos is _LATCHED
        profile = qos_profile(
            'best_effort' if qos.reliability == ReliabilityPolicy.BEST_EFFORT else 'reliable',
            'transient_local' if latched else 'volatile', qos.depth)
        if jpeg_quality > 0:
            bag_topic = name.rstrip('/') + '/compressed'
            self._topics[bag_topic] = (ros_type_name(CompressedImage), [profile],
                                       _JpegEncoder(jpeg_quality))
        else:
            bag_topic = name
            self._topics[bag_topic] = (ros_type_name(msg_type), [profile], _raw)
        if flush:
            self._flush_topics.append(bag_topic)
        self._subscriptions.append(self._node.create_subscription(
            msg_type, name, lambda data, t=bag_topic, keep=latched: self._on_raw(t, data, keep),
            qos, raw=True))

    def _repair_leftovers(self) -> None:
        if not os.path.isdir(self.record_dir):
            return
        for path in find_bags([self.record_dir]):
            try:
                info = repair_bag(path)
            except Exception as exc:  # noqa: B902 - a broken leftover must not stop the node
                # broad on purpose: a torn file fails in many ways (OS, MCAP, struct); it is
                # logged with the reason and left for the user, the node starts anyway
                self._logger.warning(f'cannot repair the unfinished bag {path}: {exc}')
                continue
            if info is not None:
                self._logger.warning(
                    f'repaired the bag of an interrupted episode: {path} '
                    f'({info["message_count"]} messages kept)')

    # ---------------------------------------------------------------- callbacks
    def _on_raw(self, topic: str, data: bytes, latched: bool) -> None:
        now = time.time_ns()
        if latched:
            self._latched[topic] = (now, data)
        bag = self._bag
        if bag is not None:
            bag.put(topic, now, data, len(data))

    # ---------------------------------------------------------------- episode API
    @property
    def active(self) -> bool:
        """True while an episode is being recorded."""
        return self._bag is not None

    def start(self, episode_id: str, start_info: Optional[Mapping[str, Any]] = None) -> str:
        """Open the bag of a new episode; returns its folder.

        :param episode_id: the episode log's id (the bag folder's name).
        :param start_info: JSON-able facts known at the start (instruction, alpha, fingerprint).
        :raises RuntimeError: when an episode is already being recorded.
        """
        with self._lock:
            if self._bag is not None:
                raise RuntimeError(f'already recording {self._bag.path}')
            os.makedirs(self.record_dir, exist_ok=True)
            info = dict(start_info or {}, episode_id=episode_id)
            bag = ThreadedBagRecorder(
                os.path.join(self.record_dir, episode_id), self._topics,
                custom_data={'retain_ros.start': json.dumps(info, sort_keys=True)},
                max_queue_bytes=self._max_bytes, flush_topics=self._flush_topics)
            for topic, (stamp, data) in sorted(self._latched.items()):
                bag.put(topic, stamp, data, len(data))
            self._bag = bag
        return bag.path

    def stop(self) -> Dict[str, Any]:
        """Stop recording the running episode; returns the counts for its episode line.

        :return: ``{'bag', 'messages', 'topics', 'dropped', 'dropped_by_topic', 'errors',
            'max_queue_mb'}``, or ``{}`` when nothing is being recorded.
        """
        with self._lock:
            bag = self._bag
        if bag is None:
            return {}
        stats = bag.stop()
        if stats['dropped']:
            self._logger.warning(
                f'recording dropped {stats["dropped"]} message(s) the disk could not keep up '
                f'with: {stats["dropped_by_topic"]}')
        return stats

    def close(self, line: Optional[Mapping[str, Any]] = None,
              status: Optional[str] = None) -> Optional[str]:
        """Finish the bag stopped by :meth:`stop`, with the episode's JSON line; returns its path.

        :param line: the episode line (None when it could not be written).
        :param status: ``custom_data['retain_ros.status']`` (default ``complete``).
        """
        with self._lock:
            bag, self._bag = self._bag, None
        if bag is None:
            return None
        bag.close(episode=line, custom_data={STATUS_KEY: status} if status else None)
        size = sum(os.path.getsize(os.path.join(bag.path, f)) for f in os.listdir(bag.path))
        self._logger.info(f'episode bag: {bag.path} ({size / 2 ** 20:.2f} MiB)')
        return bag.path

    def shutdown(self) -> None:
        """Close a bag still open and drop the recording subscriptions (teardown, cleanup).

        The bag gets status ``interrupted`` and no episode line; a later configure makes new
        subscriptions.
        """
        if self._bag is not None:
            self.stop()
            self.close(None, status=STATUS_INTERRUPTED)
        subs, self._subscriptions = self._subscriptions, []
        for sub in subs:
            try:
                self._node.destroy_subscription(sub)
            except Exception:  # noqa: B902 - a context already shut down destroyed them
                if self._node.context.ok():
                    raise
