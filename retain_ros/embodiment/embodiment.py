"""The :class:`Embodiment`: state in, per-output commands out, for one robot + checkpoint."""
from __future__ import annotations

import copy
from typing import Any
from typing import Dict
from typing import List
from typing import Mapping
from typing import Optional
from typing import Sequence
from typing import Tuple

import numpy as np

from retain_ros.embodiment import kinds
from retain_ros.embodiment.checks import camera_slot
from retain_ros.embodiment.checks import check_cameras
from retain_ros.embodiment.checks import check_policy
from retain_ros.embodiment.errors import EmbodimentError
from retain_ros.embodiment.gripper import gripper_positions
from retain_ros.embodiment.loader import Layout
from retain_ros.embodiment.loader import parse
from retain_ros.embodiment.spec import ActionSlice
from retain_ros.embodiment.spec import CameraSpec
from retain_ros.embodiment.spec import JOINT_KINDS
from retain_ros.embodiment.spec import OutputCommand
from retain_ros.embodiment.spec import OutputSpec
from retain_ros.embodiment.spec import POSITION_OUTPUTS
from retain_ros.embodiment.spec import VELOCITY_OUTPUTS
from retain_ros.embodiment.spec import RobotState
from retain_ros.embodiment.spec import StateSource


class Embodiment:
    """How one robot talks to one kind of checkpoint (built by ``load_embodiment``).

    Holds the gripper binarize memory (per slice) between :meth:`commands` calls; not
    thread-safe: call it from one thread (the node's inference thread).

    :param data: the embodiment mapping after parameter substitution.
    :param source: file name for messages.
    """

    def __init__(self, data: Mapping[str, Any], source: str):
        self._data = copy.deepcopy(dict(data))
        self.source = source
        self.layout: Layout = parse(self._data, source)
        self._slices = {s.name: s for s in self.layout.slices}
        self._outputs = {o.name: o for o in self.layout.outputs}
        self._memory: Dict[str, Optional[np.ndarray]] = {}

    # ------------------------------------------------------------------ properties
    @property
    def name(self) -> str:
        """The embodiment's name."""
        return self.layout.name

    @property
    def description(self) -> str:
        """One line about it."""
        return self.layout.description

    @property
    def control_period(self) -> Optional[float]:
        """Seconds per action, or None for the checkpoint's own period."""
        return self.layout.control_period

    @property
    def state_sources(self) -> List[StateSource]:
        """The state sources in state-vector order."""
        return list(self.layout.sources)

    @property
    def cameras(self) -> List[Tuple[Optional[str], str]]:
        """``(slot, topic)`` per camera (topic ``'empty'`` = masked; slot None = not bound)."""
        return [(c.slot, c.topic) for c in self.layout.cameras]

    @property
    def camera_specs(self) -> List[CameraSpec]:
        """The :class:`CameraSpec` list."""
        return list(self.layout.cameras)

    @property
    def slices(self) -> List[ActionSlice]:
        """The action slices in action-vector order."""
        return list(self.layout.slices)

    @property
    def outputs(self) -> List[OutputSpec]:
        """The outputs in file order."""
        return list(self.layout.outputs)

    @property
    def joint_names(self) -> List[str]:
        """Every joint read by a joint_state source, in state order, without repeats."""
        names: List[str] = []
        for src in self.layout.sources:
            names += [j for j in src.joints if j not in names]
        return names

    @property
    def state_dim(self) -> int:
        """Length of the state vector (partial while joint names are not bound)."""
        return sum(s.dim for s in self.layout.sources)

    @property
    def action_dim(self) -> int:
        """Length of the action vector (partial while joint names are not bound)."""
        return sum(s.size for s in self.layout.slices)

    @property
    def needs_joint_names(self) -> bool:
        """True when a joint list is empty: bind it with :meth:`bind_joint_names`."""
        return any(s.type == 'joint_state' and not s.joints for s in self.layout.sources) or \
            any(s.kind in JOINT_KINDS and not s.joints for s in self.layout.slices)

    @property
    def needs_camera_slots(self) -> bool:
        """True when the cameras are topics only: bind them with :meth:`bind_camera_slots`."""
        return any(c.slot is None for c in self.layout.cameras)

    def output(self, name: str) -> OutputSpec:
        """Return the output called ``name``."""
        if name not in self._outputs:
            raise EmbodimentError(f'{self.source}: no output {name!r} (outputs: '
                                  f'{", ".join(self._outputs)})')
        return self._outputs[name]

    # ------------------------------------------------------------------ binding
    def bind_joint_names(self, names: Sequence[str]) -> 'Embodiment':
        """Return a copy with every empty joint list set to ``names`` (checked again).

        :param names: the joint order (``joint_names`` or the first JointState's names).
        :raises EmbodimentError: when the names are empty or repeat, or limits do not fit.
        """
        names = [str(n) for n in names]
        if not names or len(set(names)) != len(names):
            raise EmbodimentError(f'{self.source}: joint names must be non-empty and unique, '
                                  f'got {names}')
        data = copy.deepcopy(self._data)
        for item in data.get('state') or []:
            if isinstance(item, dict) and item.get('type') == 'joint_state' and \
                    not item.get('joints'):
                item['joints'] = list(names)
        for item in data.get('actions') or []:
            if isinstance(item, dict) and item.get('kind') in JOINT_KINDS and \
                    not item.get('joints'):
                item['joints'] = list(names)
        return Embodiment(data, self.source)

    def bind_camera_slots(self, slots: Sequence[str]) -> 'Embodiment':
        """Return a copy whose topic-only cameras get the checkpoint's ``slots``, in order.

        :raises EmbodimentError: when the numbers differ.
        """
        if not self.needs_camera_slots:
            return self
        topics = [c.topic for c in self.layout.cameras]
        if len(topics) != len(slots):
            raise EmbodimentError(
                f'{self.source}: cameras: {len(topics)} camera topic(s) {topics} for '
                f'{len(slots)} checkpoint camera slot(s) {list(slots)}: give one topic per '
                'slot, in that order')
        data = copy.deepcopy(self._data)
        data['cameras'] = [{'slot': s, 'topic': t} for s, t in zip(slots, topics)]
        return Embodiment(data, self.source)

    def camera_map(self, slots: Sequence[str]) -> List[Tuple[str, str]]:
        """Pair each checkpoint camera slot with its topic, in the checkpoint's slot order.

        :param slots: the checkpoint's camera slots (with or without ``observation.images.``).
        :return: ``[(slot, topic)]`` with the checkpoint's slot names; topic ``'empty'`` = a
            zero, masked image.
        :raises EmbodimentError: when the cameras do not match the slots.
        """
        slots = [str(s) for s in slots]
        emb = self.bind_camera_slots(slots)
        check_cameras(emb, slots)
        topics = {camera_slot(c.slot): c.topic for c in emb.layout.cameras}
        return [(s, topics[camera_slot(s)]) for s in slots]

    def check_policy(self, state_dim: int, action_dim: int, camera_slots: Sequence[str],
                     feature_names: Optional[Mapping[str, Sequence[str]]] = None) -> None:
        """Check the checkpoint's sizes, camera slots and (LeRobot) feature names.

        :raises EmbodimentError: with the sizes / names on both sides.
        """
        check_policy(self, state_dim, action_dim, camera_slots, feature_names)

    def reset(self) -> None:
        """Forget the gripper binarize memory (a new episode)."""
        self._memory.clear()

    # ------------------------------------------------------------------ state
    def state_vector(self, readings: Mapping[str, Mapping[str, Any]]) -> np.ndarray:
        """Assemble the policy's state vector (policy units, float64) from the messages.

        :param readings: topic -> ``{'name', 'position', 'velocity'}`` (JointState) or
            ``{'position': (x, y, z), 'orientation': (x, y, z, w)}`` (PoseStamped).
        :raises EmbodimentError: naming the missing topic or joint.
        """
        parts = [src.ops.forward(self._source_values(i, src, readings))
                 for i, src in enumerate(self.layout.sources)]
        return np.concatenate(parts) if parts else np.zeros(0)

    def _source_values(self, i: int, src: StateSource, readings) -> np.ndarray:
        where = f'{self.source}: state[{i}]'
        msg = readings.get(src.topic)
        if msg is None:
            raise EmbodimentError(f'{where}: no message yet on topic {src.topic!r}')
        if src.type == 'pose':
            return kinds.pose_state(msg['position'], msg['orientation'], src.rotation)
        if not src.joints:
            raise EmbodimentError(f'{where}: joint names are not bound yet (bind_joint_names)')
        names = list(msg.get('name') or [])
        values = list(msg.get(src.field) or [])
        if len(values) != len(names):
            raise EmbodimentError(f'{where}: the JointState on {src.topic!r} has {len(names)} '
                                  f'name(s) but {len(values)} {src.field} value(s)')
        index = {n: k for k, n in enumerate(names)}
        for j in src.joints:
            if j not in index:
                raise EmbodimentError(f'{where}: joint {j!r} is not in the JointState on '
                                      f'{src.topic!r} (it has {names})')
        return np.array([values[index[j]] for j in src.joints], dtype=np.float64)

    def robot_state(self, readings: Mapping[str, Mapping[str, Any]]) -> RobotState:
        """Collect the measured robot (robot units): every joint of the JointState topics."""
        joints: Dict[str, float] = {}
        velocities: Dict[str, float] = {}
        ee_pose = None
        for src in self.layout.sources:
            msg = readings.get(src.topic)
            if msg is None:
                continue
            if src.type == 'pose':
                if ee_pose is None:
                    ee_pose = (np.asarray(msg['position'], dtype=np.float64).reshape(3),
                               np.asarray(msg['orientation'], dtype=np.float64).reshape(4))
                continue
            names = list(msg.get('name') or [])
            for key, target in (('position', joints), ('velocity', velocities)):
                values = list(msg.get(key) or [])
                if len(values) == len(names):
                    target.update(zip(names, (float(v) for v in values)))
        return RobotState(joints, velocities, ee_pose)

    # ------------------------------------------------------------------ actions
    def commands(self, actions: np.ndarray, at_obs: RobotState,
                 dt: float) -> Dict[str, OutputCommand]:
        """Turn one chunk into what every output should send (before the safety filter).

        :param actions: ``(H, A)`` in policy units.
        :param at_obs: the robot measured at the observation the chunk was predicted from.
        :param dt: the control period (s).
        :return: output name -> :class:`OutputCommand` (values in robot units).
        :raises EmbodimentError: wrong shape, or a measured value the maths needs is missing.
        """
        a = np.asarray(actions, dtype=np.float64)
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] != self.action_dim:
            raise EmbodimentError(f'{self.source}: chunk must be (H, {self.action_dim}), got '
                                  f'shape {tuple(a.shape)}')
        if not dt > 0:
            raise EmbodimentError(f'{self.source}: dt must be > 0, got {dt}')
        cache: Dict[str, np.ndarray] = {}
        return {o.name: OutputCommand(o.name, o.type, o.topic, list(o.names),
                                      self._values(o, a, at_obs, dt, cache), o.frame)
                for o in self.layout.outputs}

    def _positions(self, sl: ActionSlice, a: np.ndarray, at: RobotState, cache) -> np.ndarray:
        if sl.name not in cache:
            part = a[:, sl.start:sl.stop]
            if sl.kind == 'gripper':
                cache[sl.name], self._memory[sl.name] = gripper_positions(
                    sl, part, self._memory.get(sl.name))
            else:
                cache[sl.name] = kinds.joint_positions(sl, part, at, self.source)
        return cache[sl.name]

    def _values(self, o: OutputSpec, a, at: RobotState, dt: float, cache) -> np.ndarray:
        used = [self._slices[n] for n in o.slices]
        if o.type in POSITION_OUTPUTS or o.type == 'gripper_action':
            return np.concatenate([self._positions(s, a, at, cache) for s in used], axis=1)
        if o.type == 'velocity_stream':
            cols = []
            for s in used:
                if s.kind == 'joint_velocity':
                    cols.append(kinds.velocity_steps(s, a[:, s.start:s.stop]) / dt)
                    continue
                q = self._positions(s, a, at, cache)
                prev = np.concatenate([kinds.measured(s, at, self.source)[None, :], q[:-1]])
                cols.append((q - prev) / dt)
            return np.concatenate(cols, axis=1)
        sl = used[0]
        part = a[:, sl.start:sl.stop]
        if sl.kind == 'ee_pose':
            return kinds.ee_pose_targets(sl, part)
        dpos, rotvec = kinds.ee_deltas(sl, part)
        if o.type == 'twist':
            return np.concatenate([dpos / dt, rotvec / dt], axis=1)
        if at.ee_pose is None:
            raise EmbodimentError(f'{self.source}: output {o.name!r} integrates end-effector '
                                  'deltas but the end-effector pose at the observation is unknown')
        return kinds.integrate_pose(at.ee_pose[0], at.ee_pose[1], dpos, rotvec)

    def hold(self, name: str, at: RobotState) -> Optional[np.ndarray]:
        """Return what output ``name`` sends to hold still: ``(1, d)``, or None if unknown.

        Position and gripper outputs: the measured positions; velocity_stream and twist: zeros;
        pose: the measured pose. None when a measured value is missing (send nothing).
        """
        o = self.output(name)
        if o.type in VELOCITY_OUTPUTS:
            return np.zeros((1, len(o.names)))
        if o.type == 'pose':
            if at.ee_pose is None:
                return None
            return np.concatenate([at.ee_pose[0], at.ee_pose[1]])[None, :].astype(np.float64)
        q = at.positions(o.names)
        return None if q is None else q[None, :]

    def describe(self) -> str:
        """Return the human-readable layout (what ``retain-ros embodiment show`` prints)."""
        from retain_ros.embodiment.describe import describe
        return describe(self)
