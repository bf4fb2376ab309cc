"""Inputs of the ``retain_policy`` node: cameras, instruction, robot state; ages from stamps.

- each input keeps only its latest message (a one-slot buffer), converted;
- cameras: :mod:`.cameras` (checked on the executor, decoded on the node's decode thread);
- the robot state comes from the embodiment's sources (``sensor_msgs/JointState`` topics read by
  joint name, ``geometry_msgs/PoseStamped`` end-effector poses); the embodiment assembles the
  policy's state vector from them. The observation's time is that of the first source;
- the *time* of an input is its header stamp minus ``clock_offset`` (the arrival time when the
  stamp is zero); its age is ``now - time`` on the node's clock. A camera driver that freezes
  and keeps republishing the same stamp therefore ages and makes the node hold;
- the instruction has two subscriptions feeding one callback: a volatile one (connects to every
  reliable publisher, e.g. ``ros2 topic pub``) and a transient-local one (also receives the last
  message a latched publisher sent before this node started). A transient-local subscription
  alone never connects to a volatile publisher;
- a publisher whose QoS is incompatible with a subscription is reported (:mod:`.qos`).
"""
from __future__ import annotations

from dataclasses import dataclass
import functools
import threading
import time
from typing import Any
from typing import Callable
from typing import Dict
from typing import List
from typing import Optional
from typing import Tuple

import numpy as np
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from retain_ros.policies.base import Observation
from retain_ros.ros.conversions import ConversionError
from retain_ros.ros.conversions import joint_state_reading
from retain_ros.ros.conversions import pose_reading
from retain_ros.ros.conversions import stamp_to_sec
from retain_ros.ros.policy_node.cameras import CameraInputs
from retain_ros.ros.policy_node.cameras import Slot
from retain_ros.ros.policy_node.qos import INSTRUCTION_QOS
from retain_ros.ros.policy_node.qos import LATCHED_QOS
from retain_ros.ros.policy_node.qos import SENSOR_QOS
from retain_ros.ros.policy_node.qos import Subscriptions


@dataclass
class ObservationInfo:
    """What the chunk of an observation is timed from.

    :param time: observation time on the node's clock (s): the joint state's time.
    :param image_stamps: header stamps of the images used.
    :param obs_ready: monotonic time the newest input arrived.
    :param convert_ms: conversion time of the images used.
    :param robot: the measured :class:`~retain_ros.embodiment.RobotState` of the observation
        (what relative, velocity and hold commands are anchored at).
    """

    time: float
    image_stamps: Tuple[float, ...]
    obs_ready: float
    convert_ms: float
    robot: Any = None


class InputHub:
    """Subscriptions and latest values of the node's inputs.

    :param node: the node (subscriptions, logger, clock).
    :param camera_slots: camera topic -> the policy's camera slot, in slot order.
    :param empty_cameras: slots with no camera (masked by the policy).
    :param config: callable returning the node's current
        :class:`~retain_ros.ros.policy_node.config.NodeConfig`.
    :param embodiment: callable returning the current :class:`~retain_ros.embodiment.Embodiment`
        (its state sources are subscribed; it assembles the state vector).
    :param drop: ``drop(key, reason)`` counts and logs a dropped message.
    :param on_joint_names: called with the joint names taken from the first JointState when the
        embodiment reads "the message's joints" (``joint_names`` empty); returns an error string
        to refuse them.
    """

    def __init__(self, node, camera_slots: Dict[str, str], config: Callable[[], Any],
                 embodiment: Callable[[], Any], drop: Callable[[str, str], None],
                 on_joint_names: Optional[Callable[[List[str]], Optional[str]]] = None,
                 empty_cameras: Tuple[str, ...] = ()):
        self._node = node
        self.cameras = CameraInputs(camera_slots, self._time_of, self._now, drop)
        self.empty_cameras = tuple(empty_cameras)
        self._config = config
        self._embodiment = embodiment
        self._drop = drop
        self._on_joint_names = on_joint_names
        self._lock = threading.Lock()
        self._states: Dict[str, Slot] = {}
        self._instruction: Optional[str] = None
        self._subscriptions = Subscriptions(node)
        # per embodiment object (a re-load or a joint-name binding makes a new one): its state
        # sources by topic and the joints read from each topic, computed once, not per message
        self._layout: Tuple[Any, List[Any], Dict[str, List[str]]] = (None, [], {})

    @property
    def camera_slots(self) -> Dict[str, str]:
        """Camera topic -> the policy's camera slot, in slot order."""
        return self.cameras.camera_slots

    @property
    def qos_incompatible(self) -> Dict[str, int]:
        """Publishers with incompatible QoS by topic (their count), for ``/diagnostics``."""
        return self._subscriptions.incompatible

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Create the subscriptions and the decode thread (on activate)."""
        cfg = self._config()
        subscribe = self._subscriptions.add
        self.cameras.start(self._subscriptions)
        for source in self._sources():
            if source.type == 'pose':
                from geometry_msgs.msg import PoseStamped

                subscribe(PoseStamped, source.topic,
                          functools.partial(self._pose_callback, source.topic), SENSOR_QOS)
            else:
                subscribe(JointState, source.topic,
                          functools.partial(self._joint_state_callback, source.topic),
                          SENSOR_QOS)
        subscribe(String, cfg.instruction_topic, self._instruction_callback, INSTRUCTION_QOS)
        subscribe(String, cfg.instruction_topic, self._instruction_callback, LATCHED_QOS,
                  warn=False)

    def stop(self) -> None:
        """Destroy the subscriptions and stop the decode thread (on deactivate)."""
        self._subscriptions.destroy()
        self.cameras.stop()
        with self._lock:
            self._states.clear()

    def _embodiment_layout(self) -> Tuple[Any, List[Any], Dict[str, List[str]]]:
        """Return ``(embodiment, sources, joints by topic)`` of the live embodiment (cached)."""
        emb = self._embodiment()
        layout = self._layout
        if layout[0] is emb:
            return layout
        seen: Dict[str, Any] = {}
        joints: Dict[str, List[str]] = {}
        for source in emb.state_sources:
            seen.setdefault(source.topic, source)
            if source.type != 'pose':
                names = joints.setdefault(source.topic, [])
                names += [j for j in (source.joints or ()) if j not in names]
        layout = (emb, list(seen.values()), joints)
        self._layout = layout
        return layout

    def _sources(self) -> List[Any]:
        """Return the embodiment's state sources, one per topic (first occurrence)."""
        return self._embodiment_layout()[1]

    # ------------------------------------------------------------------ callbacks
    def _now(self) -> float:
        return self._node.get_clock().now().nanoseconds * 1e-9

    def _time_of(self, stamp: float, recv_ros: float) -> float:
        return stamp - self._config().clock_offset if stamp > 0 else recv_ros

    def _joints_of(self, topic: str) -> List[str]:
        return self._embodiment_layout()[2].get(topic, [])

    def _joint_state_callback(self, topic: str, msg: JointState) -> None:
        names = self._joints_of(topic)
        if not names and getattr(self._embodiment(), 'needs_joint_names', False):
            names = list(msg.name)
            if not names:
                self._drop(topic, 'joint_names is empty and the JointState has no names')
                return
            refused = self._on_joint_names(names) if self._on_joint_names else None
            if refused:
                self._drop(topic, refused)
                return
            self._node.get_logger().info(f'joint order from the first JointState: {names}')
        self._store_state(topic, msg, lambda: joint_state_reading(msg, names))

    def _pose_callback(self, topic: str, msg) -> None:
        self._store_state(topic, msg, lambda: pose_reading(msg))

    def _store_state(self, topic: str, msg, read: Callable[[], Any]) -> None:
        """Keep the reading of a state message (dropped, with the reason, when malformed)."""
        try:
            reading = read()
        except ConversionError as exc:
            self._drop(topic, str(exc))
            return
        stamp = stamp_to_sec(msg.header.stamp)
        with self._lock:
            self._states[topic] = Slot(reading, time.monotonic(), stamp,
                                       self._time_of(stamp, self._now()))

    def _instruction_callback(self, msg: String) -> None:
        text = str(msg.data)
        cap = int(self._config().max_instruction_chars)
        if len(text) > cap:
            self._drop('instruction_truncated', f'instruction of {len(text)} characters cut '
                       f'to max_instruction_chars={cap}')
            text = text[:cap]
        with self._lock:
            changed = text != self._instruction
            self._instruction = text
        if changed:
            shown = text if len(text) <= 200 else text[:200] + '...'
            self._node.get_logger().info(f'instruction: {shown!r}')

    # ------------------------------------------------------------------ reading
    @property
    def instruction(self) -> Optional[str]:
        """The last instruction received (None before the first one)."""
        with self._lock:
            return self._instruction

    def ages(self, now: Optional[float] = None) -> Dict[str, Optional[float]]:
        """Return the age (s) of every input by topic; None when none arrived."""
        now = self._now() if now is None else now
        images = self.cameras.latest()
        with self._lock:
            states = dict(self._states)
        out: Dict[str, Optional[float]] = {}
        for topic, slot in self.camera_slots.items():
            entry = images.get(slot)
            out[topic] = None if entry is None else now - entry.time
        for source in self._sources():
            entry = states.get(source.topic)
            out[source.topic] = None if entry is None else now - entry.time
        return out

    def robot_state(self):
        """Return the latest measured :class:`~retain_ros.embodiment.RobotState`, or None."""
        with self._lock:
            readings = {t: s.value for t, s in self._states.items()}
        try:
            return self._embodiment().robot_state(readings)
        except ValueError:
            return None

    def observation(self) -> Tuple[Optional[Observation], Optional[str],
                                   Optional[ObservationInfo]]:
        """Return the latest observation, or why the node holds.

        :return: ``(obs, None, info)``, or ``(None, reason, None)`` when an input is missing,
            stale, stamped in the future or does not fit the embodiment, or no instruction is
            known.
        """
        cfg = self._config()
        emb, sources, _ = self._embodiment_layout()
        now = self._now()
        max_age = float(cfg.max_observation_age)
        images = self.cameras.latest()
        with self._lock:
            states = dict(self._states)
            instruction = self._instruction
        missing = [t for t, s in self.camera_slots.items() if s not in images]
        if missing:
            return None, f'no image yet on {", ".join(missing)}', None
        waiting = [s.topic for s in sources if s.topic not in states]
        if waiting:
            return None, f'no {", ".join(waiting)} yet', None
        inputs = [(t, images[s]) for t, s in self.camera_slots.items()]
        inputs += [(s.topic, states[s.topic]) for s in sources]
        for topic, entry in inputs:
            age = now - entry.time
            what = 'header stamp' if entry.stamp > 0 else 'arrival'
            if age > max_age:
                return None, (f'stale {topic} ({age:.2f} s > {max_age:g} s since its {what}'
                              + ('; a frozen stamp, or set clock_offset)' if entry.stamp > 0
                                 else ')')), None
            if age < -max_age:
                return None, (f'{topic} is stamped {-age:.2f} s in the future: its clock is '
                              'ahead of this node (set clock_offset)'), None
        if not instruction:
            instruction = cfg.default_instruction
        if not instruction:
            return None, ('no instruction: publish one on '
                          f'{cfg.instruction_topic} or set default_instruction'), None
        readings = {t: s.value for t, s in states.items()}
        try:
            state = emb.state_vector(readings)
            robot = emb.robot_state(readings)
        except ValueError as exc:
            return None, f'state does not fit the embodiment: {exc}', None
        used = [images[s] for s in self.camera_slots.values()]
        primary = states[sources[0].topic]
        info = ObservationInfo(
            time=primary.time, image_stamps=tuple(s.stamp for s in used),
            obs_ready=max([s.recv for s in used] + [s.recv for s in states.values()]),
            convert_ms=sum(s.convert_ms for s in used), robot=robot)
        obs = Observation(images={s: images[s].value for s in self.camera_slots.values()},
                          instruction=instruction, state=np.asarray(state, dtype=np.float64),
                          empty_cameras=self.empty_cameras)
        return obs, None, info
