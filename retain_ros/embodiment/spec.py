"""The parsed, validated pieces of an embodiment (frozen dataclasses) and the name tables."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

import numpy as np

from retain_ros.embodiment.operators import OpChain
from retain_ros.embodiment.rotations import ROTATION_SIZES

STATE_TYPES = ('joint_state', 'pose')
JOINT_FIELDS = ('position', 'velocity')
KINDS = ('joint_position', 'joint_delta', 'joint_velocity', 'gripper', 'ee_delta', 'ee_pose')
JOINT_KINDS = ('joint_position', 'joint_delta', 'joint_velocity')
POSITION_OUTPUTS = ('joint_trajectory', 'position_stream', 'joint_state')
#: outputs commanded with velocities: holding sends them zeros, never the last command
VELOCITY_OUTPUTS = ('velocity_stream', 'twist')
OUTPUT_TYPES = POSITION_OUTPUTS + VELOCITY_OUTPUTS + ('gripper_action', 'pose')
#: legacy values of the node's ``output_mode`` parameter
OUTPUT_ALIASES = {'trajectory': 'joint_trajectory', 'stream': 'position_stream'}
#: which slice kinds may feed which output type
OUTPUT_KINDS = {
    'joint_trajectory': ('joint_position', 'joint_delta', 'joint_velocity', 'gripper'),
    'position_stream': ('joint_position', 'joint_delta', 'joint_velocity', 'gripper'),
    'joint_state': ('joint_position', 'joint_delta', 'joint_velocity', 'gripper'),
    'velocity_stream': JOINT_KINDS,
    'twist': ('ee_delta',),
    'gripper_action': ('gripper',),
    'pose': ('ee_delta', 'ee_pose'),
}
#: which ``limits`` fields each output type takes
OUTPUT_LIMITS = {
    'joint_trajectory': ('lower', 'upper', 'max_step'),
    'position_stream': ('lower', 'upper', 'max_step'),
    'joint_state': ('lower', 'upper', 'max_step'),
    'velocity_stream': ('lower', 'upper', 'max_velocity'),
    'twist': ('max_linear', 'max_angular'),
    'gripper_action': ('lower', 'upper'),
    'pose': ('workspace',),
}
GRIPPER_ACTION_TYPES = ('gripper_command', 'parallel_gripper')
TWIST_NAMES = ('linear.x', 'linear.y', 'linear.z', 'angular.x', 'angular.y', 'angular.z')
POSE_NAMES = ('x', 'y', 'z', 'qx', 'qy', 'qz', 'qw')
MIN_TWIST_RATE = 30.0


@dataclass(frozen=True)
class StateSource:
    """One input that contributes consecutive values to the policy's state vector.

    :param topic: the ROS topic (``sensor_msgs/JointState`` or ``geometry_msgs/PoseStamped``).
    :param type: ``joint_state`` or ``pose``.
    :param field: ``position`` or ``velocity`` (joint_state only).
    :param joints: joint names read by name (joint_state only; empty = not bound yet).
    :param rotation: rotation format of the pose in the state (pose only).
    :param ops: unit operators robot -> policy.
    """

    topic: str
    type: str
    field: str = 'position'
    joints: Tuple[str, ...] = ()
    rotation: str = ''
    ops: OpChain = dataclasses.field(default_factory=OpChain, compare=False)

    @property
    def dim(self) -> int:
        """Number of state values this source gives."""
        if self.type == 'pose':
            return 3 + ROTATION_SIZES[self.rotation]
        return len(self.joints)


@dataclass(frozen=True)
class CameraSpec:
    """A checkpoint camera slot and the topic feeding it (``'empty'`` = zero, masked image).

    ``slot`` is None when the embodiment lists topics only (``cameras: $camera_topics``): the
    slots are then taken from the checkpoint, in order (:meth:`Embodiment.bind_camera_slots`).
    """

    slot: Optional[str]
    topic: str

    @property
    def empty(self) -> bool:
        """Whether the slot gets a zero image (masked)."""
        return self.topic == 'empty'


@dataclass(frozen=True)
class ActionSlice:
    """Consecutive values of the action vector with one meaning (see ``docs/embodiment.md``).

    :param name: unique slice name (outputs refer to it).
    :param kind: one of :data:`KINDS`.
    :param start: index of the first value in the action vector.
    :param size: number of values.
    :param joints: robot joints (joint kinds and gripper).
    :param ops: unit operators (robot -> policy; inverted for actions).
    :param clip: ``(lo, hi)`` in policy units (joint_velocity, ee_delta) or None.
    :param scale: joint_velocity: robot units per control step for a policy value of 1.0.
    :param policy_range: gripper: the policy's (open, closed) values.
    :param actuator_range: gripper: the actuator's (open, closed) values.
    :param invert: gripper: mirror the policy value inside ``policy_range`` first.
    :param threshold: gripper: binarize threshold (policy units) or None.
    :param hysteresis: gripper: margin on each side of the threshold.
    :param rotation: ee kinds: rotation format.
    :param frame: ee kinds: frame of the deltas / poses.
    :param position_scale: ee_delta: metres per control step at 1.0.
    :param rotation_scale: ee_delta: radians per control step at 1.0.
    """

    name: str
    kind: str
    start: int
    size: int
    joints: Tuple[str, ...] = ()
    ops: OpChain = dataclasses.field(default_factory=OpChain, compare=False)
    clip: Optional[Tuple[float, float]] = None
    scale: float = 1.0
    policy_range: Tuple[float, float] = (0.0, 1.0)
    actuator_range: Tuple[float, float] = (0.0, 1.0)
    invert: bool = False
    threshold: Optional[float] = None
    hysteresis: float = 0.0
    rotation: str = ''
    frame: str = ''
    position_scale: float = 1.0
    rotation_scale: float = 1.0

    @property
    def stop(self) -> int:
        """Index after the last value."""
        return self.start + self.size


@dataclass(frozen=True)
class OutputLimits:
    """Safety limits of one output (every field optional; empty / 0 / None = no limit).

    :param lower: per-joint lower position limits (position, velocity, gripper outputs).
    :param upper: per-joint upper position limits.
    :param max_step: largest position change per control period, chained from the state.
    :param max_velocity: per-joint speed limits (velocity_stream; one value = all joints).
    :param max_linear: twist: largest linear speed (m/s).
    :param max_angular: twist: largest angular speed (rad/s).
    :param workspace: pose: ``((xmin, ymin, zmin), (xmax, ymax, zmax))``.
    """

    lower: Tuple[float, ...] = ()
    upper: Tuple[float, ...] = ()
    max_step: float = 0.0
    max_velocity: Tuple[float, ...] = ()
    max_linear: float = 0.0
    max_angular: float = 0.0
    workspace: Optional[Tuple[Tuple[float, float, float], Tuple[float, float, float]]] = None


@dataclass(frozen=True)
class OutputSpec:
    """One controller output.

    :param name: unique output name.
    :param type: one of :data:`OUTPUT_TYPES`.
    :param topic: the topic (or action name for ``gripper_action``).
    :param slices: names of the action slices feeding it, in order.
    :param names: joint names in value order (twist / pose: the component names).
    :param limits: the :class:`OutputLimits`.
    :param rate: twist: publish rate in Hz (0 for other types).
    :param action_type: gripper_action: ``gripper_command`` or ``parallel_gripper``.
    :param max_effort: gripper_action: effort sent with each goal.
    :param frame: twist / pose: frame id of the commands.
    """

    name: str
    type: str
    topic: str
    slices: Tuple[str, ...]
    names: Tuple[str, ...]
    limits: OutputLimits = OutputLimits()
    rate: float = 0.0
    action_type: str = ''
    max_effort: float = 0.0
    frame: str = ''


@dataclass(frozen=True)
class RobotState:
    """The measured robot at one instant, in robot units (what the ROS messages carry).

    :param joints: joint name -> measured position (every joint of every JointState read).
    :param velocities: joint name -> measured velocity (when the messages carry them).
    :param ee_pose: ``(position (3,), quaternion xyzw (4,))`` or None.
    """

    joints: Dict[str, float] = dataclasses.field(default_factory=dict)
    velocities: Dict[str, float] = dataclasses.field(default_factory=dict)
    ee_pose: Optional[Tuple[np.ndarray, np.ndarray]] = None

    def positions(self, names: Sequence[str]) -> Optional[np.ndarray]:
        """Return the measured positions of ``names`` in order (None when one is unknown)."""
        if any(n not in self.joints for n in names):
            return None
        return np.array([self.joints[n] for n in names], dtype=np.float64)


@dataclass
class OutputCommand:
    """What one output should send for one chunk (robot units, before the safety filter).

    :param name: the output's name.
    :param type: the output's type.
    :param topic: the output's topic.
    :param names: joint / component names of the columns.
    :param values: ``(H, d)`` float64 values (positions, velocities, twist, gripper, pose).
    :param frame: frame id (twist / pose), else ``''``.
    """

    name: str
    type: str
    topic: str
    names: List[str]
    values: np.ndarray
    frame: str = ''
