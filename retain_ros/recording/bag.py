"""One rosbag2 bag in MCAP storage: a folder with ``metadata.yaml`` and ``<name>_0.mcap``.

What ``ros2 bag record -s mcap`` writes, so ``ros2 bag info`` / ``ros2 bag play`` on a robot and
the ``rosbags`` / ``mcap`` Python readers read it:

- the ``.mcap`` file (written with the ``mcap`` library) has the ``ros2`` profile, one schema per
  message type (``ros2msg`` encoding: the ``.msg`` text with its dependencies, see
  :mod:`~retain_ros.recording.msgdefs`), one channel per topic (``cdr`` encoding, channel metadata
  ``offered_qos_profiles`` and ``topic_type_hash``), messages as CDR bytes produced by the ROS
  serializer (this module never serializes a message itself), chunks compressed with zstd, and a
  ``rosbag2`` metadata record (``serialized_metadata``) as rosbag2 writes one;
- ``metadata.yaml`` is rosbag2's bag information in **version 8** (the newest version whose
  ``offered_qos_profiles`` is a YAML string: Jazzy, Kilted and later read it, and it has
  ``custom_data``), written when the bag is opened and rewritten, atomically, when it is closed.

Crash safety: :meth:`BagWriter.flush` ends the MCAP chunk in progress and hands it to the OS (and
``fsync`` s when asked), so a process killed with SIGKILL leaves every flushed chunk on disk; the
file then lacks its summary and footer, and ``metadata.yaml`` still says
``retain_ros.status: recording``. :func:`repair_bag` reads such a file up to its last complete
record and rewrites it as a finished bag (status ``interrupted``), which every reader takes.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
from typing import Any
from typing import Dict
from typing import List
from typing import Mapping
from typing import Optional
from typing import Sequence

from mcap.exceptions import McapError
from mcap.records import Channel
from mcap.records import Message
from mcap.records import Schema
from mcap.stream_reader import StreamReader
from mcap.writer import CompressionType
from mcap.writer import Writer
import yaml

from retain_ros import __version__
from retain_ros.recording.msgdefs import message_definition
from retain_ros.recording.msgdefs import type_hash

#: rosbag2 metadata version written (see the module docstring)
METADATA_VERSION = 8
METADATA_FILE = 'metadata.yaml'
#: ``custom_data`` keys
STATUS_KEY = 'retain_ros.status'
EPISODE_KEY = 'retain_ros.episode'
#: MCAP metadata record holding the episode's JSON line
EPISODE_RECORD = 'retain_ros.episode'
STATUS_RECORDING = 'recording'
STATUS_COMPLETE = 'complete'
STATUS_INTERRUPTED = 'interrupted'

#: QoS profile fields in rosbag2's v8 encoding (rmw enum values)
HISTORY = {'keep_last': 1, 'keep_all': 2}
RELIABILITY = {'reliable': 1, 'best_effort': 2}
DURABILITY = {'transient_local': 1, 'volatile': 2}


class BagError(RuntimeError):
    """A bag that cannot be written or read (the message names the path)."""


def qos_profile(reliability: str = 'reliable', durability: str = 'volatile', depth: int = 10,
                history: str = 'keep_last') -> Dict[str, Any]:
    """One offered QoS profile as rosbag2 v8 stores it (rmw enum values, infinite durations)."""
    infinite = {'sec': 2147483647, 'nsec': 4294967295}
    return {
        'history': HISTORY[history], 'depth': int(depth), 'reliability': RELIABILITY[reliability],
        'durability': DURABILITY[durability], 'deadline': dict(infinite),
        'lifespan': dict(infinite), 'liveliness': 1,
        'liveliness_lease_duration': dict(infinite), 'avoid_ros_namespace_conventions': False,
    }


def _qos_text(profiles: Sequence[Mapping[str, Any]]) -> str:
    return yaml.safe_dump([dict(p) for p in profiles], sort_keys=False).strip() if profiles else ''


def _mcap_name(path: str) -> str:
    return os.path.basename(os.path.normpath(path)) + '_0.mcap'


def _write_atomic(path: str, text: str) -> None:
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path))


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path or '.', os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _Topic:
    def __init__(self, name: str, msgtype: str, qos: Sequence[Mapping[str, Any]], channel: int):
        self.name, self.msgtype, self.qos, self.channel = name, msgtype, list(qos), channel
        self.count = 0


class BagWriter:
    """Write one bag; not thread safe (one writer thread owns it).

    :param path: the bag folder; it must not exist yet (rosbag2 never overwrites a bag).
    :param custom_data: string key/values for ``metadata.yaml``'s ``custom_data``.
    :param chunk_size: MCAP chunk size in bytes (a chunk is also ended by :meth:`flush`).
    :param compression: ``'zstd'``, ``'lz4'`` or ``''`` (chunk compression).
    :param file_name: name of the MCAP file (default ``<folder name>_0.mcap``, as rosbag2).
    :raises BagError: when the folder exists or cannot be created.
    """

    def __init__(self, path: str, custom_data: Optional[Mapping[str, str]] = None,
                 chunk_size: int = 1 << 20, compression: str = 'zstd',
                 file_name: Optional[str] = None):
        self.path = os.path.abspath(os.fspath(path))
        try:
            os.makedirs(self.path)
        except FileExistsError:
            raise BagError(f'{self.path} exists already; a bag is never overwritten') from None
        except OSError as exc:
            raise BagError(f'cannot create the bag folder {self.path}: {exc}') from exc
        self.mcap_path = os.path.join(self.path, file_name or _mcap_name(self.path))
        self.custom_data: Dict[str, str] = {str(k): str(v) for k, v in (custom_data or {}).items()}
        self.custom_data.setdefault(STATUS_KEY, STATUS_RECORDING)
        self._stream = open(self.mcap_path, 'xb')
        kind = {'zstd': CompressionType.ZSTD, 'lz4': CompressionType.LZ4,
                '': CompressionType.NONE}[compression]
        self._writer = Writer(self._stream, chunk_size=chunk_size, compression=kind)
        self._writer.start(profile='ros2', library=f'retain_ros {__version__} (mcap python)')
        self._schemas: Dict[str, int] = {}
        self._topics: Dict[str, _Topic] = {}
        self._start_ns: Optional[int] = None
        self._end_ns = 0
        self._closed = False
        self.write_metadata()

    # ---------------------------------------------------------------- writing
    def add_topic(self, name: str, msgtype: str,
                  qos: Sequence[Mapping[str, Any]] = ()) -> int:
        """Register a topic; returns its channel id (the same id for a topic added twice).

        :param name: fully qualified topic name (``/camera/image_raw``).
        :param msgtype: ``'sensor_msgs/msg/Image'``.
        :param qos: offered QoS profiles (:func:`qos_profile`), replayed by ``ros2 bag play``.
        """
        if name in self._topics:
            return self._topics[name].channel
        if msgtype not in self._schemas:
            self._schemas[msgtype] = self._writer.register_schema(
                name=msgtype, encoding='ros2msg',
                data=message_definition(msgtype).encode('utf-8'))
        channel = self._writer.register_channel(
            topic=name, message_encoding='cdr', schema_id=self._schemas[msgtype],
            metadata={'offered_qos_profiles': _qos_text(qos),
                      'topic_type_hash': type_hash(msgtype)})
        self._topics[name] = _Topic(name, msgtype, qos, channel)
        return channel

    def write(self, topic: str, data: bytes, log_time_ns: int,
              publish_time_ns: Optional[int] = None) -> None:
        """Append one CDR-serialized message of a registered topic."""
        entry = self._topics[topic]
        self._writer.add_message(channel_id=entry.channel, log_time=int(log_time_ns), data=data,
                                 publish_time=int(publish_time_ns or log_time_ns),
                                 sequence=entry.count)
        entry.count += 1
        if self._start_ns is None or log_time_ns < self._start_ns:
            self._start_ns = int(log_time_ns)
        self._end_ns = max(self._end_ns, int(log_time_ns))

    def flush(self, fsync: bool = False) -> None:
        """End the chunk in progress and hand it to the OS (``fsync`` too when asked)."""
        self._writer.flush()
        if fsync:
            os.fsync(self._stream.fileno())

    @property
    def message_count(self) -> int:
        """Messages written so far."""
        return sum(t.count for t in self._topics.values())

    @property
    def topics(self) -> Dict[str, int]:
        """``{topic: messages written}``."""
        return {t.name: t.count for t in self._topics.values()}

    def write_metadata(self) -> None:
        """(Re)write ``metadata.yaml`` with the counts so far (atomically)."""
        _write_atomic(os.path.join(self.path, METADATA_FILE), yaml.safe_dump(
            {'rosbag2_bagfile_information': self._info()}, sort_keys=False))

    def close(self, custom_data: Optional[Mapping[str, str]] = None,
              episode: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """Finish the MCAP file (summary, footer) and rewrite ``metadata.yaml``.

        :param custom_data: more ``custom_data`` entries (strings).
        :param episode: the episode's JSON line; stored as ``custom_data['retain_ros.episode']``
            and as an MCAP metadata record ``retain_ros.episode``.
        :return: the rosbag2 bag information written.
        """
        if self._closed:
            return self._info()
        self.custom_data.update({str(k): str(v) for k, v in (custom_data or {}).items()})
        if episode is not None:
            self.custom_data[EPISODE_KEY] = json.dumps(episode, sort_keys=True)
        if self.custom_data.get(STATUS_KEY) == STATUS_RECORDING:
            self.custom_data[STATUS_KEY] = STATUS_COMPLETE
        self._writer.flush()
        info = self._info()
        if episode is not None:
            self._writer.add_metadata(EPISODE_RECORD,
                                      {'episode': self.custom_data[EPISODE_KEY]})
        self._writer.add_metadata('rosbag2', {'serialized_metadata': yaml.safe_dump(
            info, sort_keys=False)})
        self._writer.finish()
        self._stream.flush()
        os.fsync(self._stream.fileno())
        self._stream.close()
        self._closed = True
        self.write_metadata()
        return info

    def abort(self) -> None:
        """Close the file without a summary (what a crash leaves; :func:`repair_bag` fixes it)."""
        if not self._closed:
            self._closed = True
            self._stream.close()

    def _info(self) -> Dict[str, Any]:
        start = self._start_ns or 0
        duration = max(0, self._end_ns - start) if self._start_ns is not None else 0
        count = self.message_count
        name = os.path.basename(self.mcap_path)
        return {
            'version': METADATA_VERSION,
            'storage_identifier': 'mcap',
            'duration': {'nanoseconds': duration},
            'starting_time': {'nanoseconds_since_epoch': start},
            'message_count': count,
            'topics_with_message_count': [
                {'topic_metadata': {
                    'name': t.name, 'type': t.msgtype, 'serialization_format': 'cdr',
                    'offered_qos_profiles': _qos_text(t.qos),
                    'type_description_hash': type_hash(t.msgtype)},
                 'message_count': t.count}
                for t in self._topics.values()],
            'compression_format': '',
            'compression_mode': '',
            'relative_file_paths': [name],
            'files': [{'path': name, 'starting_time': {'nanoseconds_since_epoch': start},
                       'duration': {'nanoseconds': duration}, 'message_count': count}],
            'custom_data': dict(self.custom_data),
            'ros_distro': os.environ.get('ROS_DISTRO', ''),
        }


# -------------------------------------------------------------------- reading
def read_metadata(path: str) -> Dict[str, Any]:
    """``rosbag2_bagfile_information`` of the bag folder ``path``.

    :raises BagError: when ``metadata.yaml`` is missing or not a rosbag2 bag's.
    """
    file = os.path.join(path, METADATA_FILE)
    try:
        with open(file, encoding='utf-8') as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise BagError(f'{path}: not a bag folder (cannot read {METADATA_FILE}: {exc})') from exc
    info = (data or {}).get('rosbag2_bagfile_information') if isinstance(data, dict) else None
    if not isinstance(info, dict):
        raise BagError(f'{file}: no rosbag2_bagfile_information')
    return info


def episode_of(path: str) -> Optional[Dict[str, Any]]:
    """Return the episode log line stored in the bag's ``custom_data``, or None."""
    text = (read_metadata(path).get('custom_data') or {}).get(EPISODE_KEY)
    return json.loads(text) if text else None


def mcap_path(path: str) -> str:
    """Return the ``.mcap`` file of the bag folder ``path``."""
    info = read_metadata(path)
    files = info.get('relative_file_paths') or [_mcap_name(path)]
    return os.path.join(path, files[0])


def is_finished(file: str) -> bool:
    """Whether the MCAP file ends with a footer and the closing magic."""
    try:
        with open(file, 'rb') as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() < 8 + 37:
                return False
            handle.seek(-8, os.SEEK_END)
            return handle.read(8) == b'\x89MCAP0\r\n'
    except OSError:
        return False


def scan_records(file: str) -> tuple:
    """Read an MCAP file's schemas, channels and messages front to back.

    Reading stops at the last complete record (a file cut by a crash ends in a partial record,
    which is skipped).

    :return: ``(schemas, channels, messages, complete)`` - lists of mcap records, and whether
        the file was read to its end.
    """
    schemas: List[Schema] = []
    channels: List[Channel] = []
    messages: List[Message] = []
    complete = True
    with open(file, 'rb') as handle:
        reader = StreamReader(handle, skip_magic=False, emit_chunks=False)
        try:
            for record in reader.records:
                if isinstance(record, Message):
                    messages.append(record)
                elif isinstance(record, Schema):
                    schemas.append(record)
                elif isinstance(record, Channel):
                    channels.append(record)
        except (McapError, struct.error, EOFError, ValueError):
            complete = False
    return schemas, channels, messages, complete


def repair_bag(path: str) -> Optional[Dict[str, Any]]:
    """Make a bag cut short by a crash (kill -9, power loss) readable by every reader.

    Does nothing (returns None) when the bag was closed properly. Otherwise reads its MCAP file
    up to the last complete record (every chunk flushed before the crash), writes a finished MCAP
    file with the same topics and messages in its place, and rewrites ``metadata.yaml`` with
    ``retain_ros.status: interrupted``.

    :return: the new bag information, or None when nothing had to be done.
    :raises BagError: when ``path`` is not a bag folder.
    """
    info = read_metadata(path)
    file = mcap_path(path)
    status = (info.get('custom_data') or {}).get(STATUS_KEY)
    if is_finished(file) and status != STATUS_RECORDING:
        return None
    schemas, channels, messages, _ = scan_records(file)
    schema_by_id = {s.id: s for s in schemas}
    qos = {t['topic_metadata']['name']: t['topic_metadata'].get('offered_qos_profiles') or ''
           for t in info.get('topics_with_message_count') or []}
    tmp = path.rstrip('/') + '.repair'
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    custom = dict(info.get('custom_data') or {})
    custom[STATUS_KEY] = STATUS_INTERRUPTED
    writer = BagWriter(tmp, custom_data=custom, file_name=os.path.basename(file))
    names = {}
    for channel in channels:
        schema = schema_by_id.get(channel.schema_id)
        if schema is None:
            continue
        profiles = yaml.safe_load(channel.metadata.get('offered_qos_profiles')
                                  or qos.get(channel.topic) or '') or []
        writer.add_topic(channel.topic, schema.name, profiles)
        names[channel.id] = channel.topic
    for entry in info.get('topics_with_message_count') or []:
        meta = entry['topic_metadata']
        if meta['name'] not in names.values():     # no channel flushed before the crash
            writer.add_topic(meta['name'], meta['type'],
                             yaml.safe_load(meta.get('offered_qos_profiles') or '') or [])
    for message in messages:
        if message.channel_id in names:
            writer.write(names[message.channel_id], message.data, message.log_time,
                         message.publish_time)
    writer.close()
    os.replace(writer.mcap_path, file)
    os.replace(os.path.join(tmp, METADATA_FILE), os.path.join(path, METADATA_FILE))
    _fsync_dir(path)
    os.rmdir(tmp)
    return read_metadata(path)


def find_bags(paths: Sequence[str]) -> List[str]:
    """Bag folders among ``paths``: each path is a bag folder or a folder of bag folders."""
    found: List[str] = []
    for path in paths:
        path = os.path.abspath(os.fspath(path))
        if os.path.isfile(os.path.join(path, METADATA_FILE)):
            found.append(path)
        elif os.path.isdir(path):
            found.extend(os.path.join(path, d) for d in sorted(os.listdir(path))
                         if os.path.isfile(os.path.join(path, d, METADATA_FILE)))
        else:
            raise BagError(f'{path}: no such bag or folder')
    return found
