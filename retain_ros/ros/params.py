"""Parameters of the ``retain_policy`` node: one table, declared with descriptors.

Names are fixed by DESIGN.md ('Names users type'). ``read_only`` parameters are the ones that
cannot change while the node runs (paths, topics, device, timing); the alpha parameters and the
safety limits can change live (alpha changes re-merge the weights in place).
"""
from __future__ import annotations

from dataclasses import dataclass
from dataclasses import fields
import math
import os
from typing import Any
from typing import Dict
from typing import List
from typing import Optional
from typing import Tuple

from rcl_interfaces.msg import FloatingPointRange
from rcl_interfaces.msg import IntegerRange
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import ParameterException
from rclpy.parameter import Parameter

from retain_ros.merging.live import KEEP_SOURCES
from retain_ros.merging.spec import RECIPES

#: alpha parameters; changing one re-merges the weights
ALPHA_PARAMS: Tuple[str, ...] = ('alpha', 'alpha_vision', 'alpha_language', 'alpha_action')
#: parameters whose change triggers a re-merge
MERGE_PARAMS: Tuple[str, ...] = ALPHA_PARAMS + ('recipe',)
#: group of each per-group alpha parameter
GROUP_OF_PARAM = {'alpha_vision': 'vision', 'alpha_language': 'language',
                  'alpha_action': 'action'}
#: per-group value meaning "follow alpha"
FOLLOW = -1.0
#: default episode log, under ``$ROS_HOME`` (``~/.ros``, where ROS keeps its own logs)
DEFAULT_EPISODE_LOG = 'retain_ros/episodes.jsonl'
OUTPUT_MODES = ('trajectory', 'stream')
#: chunk blending modes (rtc: real-time chunking guidance from the previous chunk)
CHUNK_BLENDING = ('none', 'rtc')


def default_episode_log() -> str:
    """``$ROS_HOME/retain_ros/episodes.jsonl`` (``~/.ros`` when ROS_HOME is unset)."""
    home = os.environ.get('ROS_HOME') or os.path.join('~', '.ros')
    return os.path.abspath(os.path.expanduser(os.path.join(home, DEFAULT_EPISODE_LOG)))


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: name, type, default, description, range, read-only."""

    name: str
    type: Parameter.Type
    default: Any
    description: str
    read_only: bool = False
    float_range: Optional[Tuple[float, float]] = None
    int_range: Optional[Tuple[int, int]] = None
    constraints: str = ''

    def descriptor(self) -> ParameterDescriptor:
        """The ``ParameterDescriptor`` rclpy enforces on every set."""
        desc = ParameterDescriptor(
            name=self.name, type=self.type.value, description=self.description,
            read_only=self.read_only, additional_constraints=self.constraints)
        if self.float_range is not None:
            desc.floating_point_range = [FloatingPointRange(
                from_value=float(self.float_range[0]), to_value=float(self.float_range[1]),
                step=0.0)]
        if self.int_range is not None:
            desc.integer_range = [IntegerRange(
                from_value=int(self.int_range[0]), to_value=int(self.int_range[1]), step=1)]
        return desc

    def allowed(self) -> str:
        """What a value must be, in words: ``'a double in [0, 1]'``, ``'an integer in [1, 9]'``."""
        text = TYPE_WORDS.get(self.type, self.type.name.lower())
        if self.float_range is not None:
            text += f' in [{self.float_range[0]:g}, {self.float_range[1]:g}]'
        if self.int_range is not None:
            text += f' in [{self.int_range[0]}, {self.int_range[1]}]'
        if self.constraints:
            text += f' ({self.constraints})'
        return text

    def in_range(self, value: Any) -> bool:
        """Whether a value of this parameter's type lies in its range (True without one)."""
        for bounds in (self.float_range, self.int_range):
            if bounds is not None and not min(bounds) <= value <= max(bounds):
                return False
        return True


_S = Parameter.Type.STRING
_SA = Parameter.Type.STRING_ARRAY
_D = Parameter.Type.DOUBLE
_DA = Parameter.Type.DOUBLE_ARRAY
_I = Parameter.Type.INTEGER
_B = Parameter.Type.BOOL
#: parameter types in words, for error messages
TYPE_WORDS = {_S: 'a string', _SA: 'a list of strings', _D: 'a double', _DA: 'a list of doubles',
              _I: 'an integer', _B: 'a bool (true or false)',
              Parameter.Type.INTEGER_ARRAY: 'a list of integers',
              Parameter.Type.BOOL_ARRAY: 'a list of bools',
              Parameter.Type.BYTE_ARRAY: 'a list of bytes'}
_GROUP_ALPHA = ('alpha for the {} group (weight on the FINETUNED model); -1 = follow alpha. '
                'Setting it re-merges in place; the set fails (old weights stay live) when the '
                'merge does.')

PARAMS: Tuple[ParamSpec, ...] = (
    # checkpoints and merge
    ParamSpec('pretrained_path', _S, '',
              'pretrained (generalist) checkpoint: LeRobot/HF dir, .safetensors, sharded index. '
              "Empty = the demo checkpoints made by 'retain-ros demo-train'.", read_only=True),
    ParamSpec('finetuned_paths', _SA, [],
              'finetuned checkpoint(s); several for task-arithmetic / sequential recipes. Empty '
              'with an empty pretrained_path = the demo finetune.', read_only=True),
    ParamSpec('tokenizer_path', _S, '',
              'local tokenizer dir or tokenizer.json (nothing is downloaded); empty = the one '
              'next to the checkpoint', read_only=True),
    ParamSpec('family', _S, 'auto', 'model family: auto|pi0|pi05|smolvla|...', read_only=True),
    ParamSpec('recipe', _S, 'interpolate',
              f'merge recipe: {"|".join(RECIPES)} (re-merges live)',
              constraints=f'one of {", ".join(RECIPES)}'),
    ParamSpec('alpha', _D, 0.5,
              'merge coefficient, weight on the FINETUNED model: theta = (1 - alpha)*theta_pre + '
              'alpha*theta_ft (0 = pretrained, 1 = finetuned). Setting it re-merges in place; '
              'the set fails (old weights stay live) when the merge does.',
              float_range=(0.0, 1.0)),
    ParamSpec('alpha_vision', _D, FOLLOW, _GROUP_ALPHA.format('vision (image encoder)'),
              float_range=(-1.0, 1.0), constraints='-1 or a value in [0, 1]'),
    ParamSpec('alpha_language', _D, FOLLOW, _GROUP_ALPHA.format('language (VLM language model)'),
              float_range=(-1.0, 1.0), constraints='-1 or a value in [0, 1]'),
    ParamSpec('alpha_action', _D, FOLLOW, _GROUP_ALPHA.format('action (action expert)'),
              float_range=(-1.0, 1.0), constraints='-1 or a value in [0, 1]'),
    ParamSpec('keep_sources', _S, 'auto',
              'where pretrained/finetuned tensors stay for live alpha changes: device (fastest), '
              'host (CPU memory), disk (re-read from the files, least memory), auto (the '
              'fastest that fits, planned before allocating)', read_only=True,
              constraints=f'one of {", ".join(KEEP_SOURCES)}'),
    ParamSpec('device', _S, 'auto', 'auto|cpu|cuda|cuda:N; the merge runs on this device',
              read_only=True),
    ParamSpec('dtype', _S, 'auto', 'auto|float32|bfloat16|float16', read_only=True),
    # inputs
    ParamSpec('camera_topics', _SA, ['camera/image_raw'],
              "camera topics, in the model's camera-slot order; sensor_msgs/Image, or "
              "CompressedImage (jpeg/png) when the topic ends in '/compressed'", read_only=True),
    ParamSpec('instruction_topic', _S, 'instruction',
              'std_msgs/String instruction topic; volatile and transient-local (latched) '
              'publishers both connect', read_only=True),
    ParamSpec('max_instruction_chars', _I, 2000,
              'longer instructions are cut to this many characters before tokenization',
              int_range=(1, 1000000)),
    ParamSpec('default_instruction', _S, '',
              'instruction used until one arrives on instruction_topic'),
    ParamSpec('joint_states_topic', _S, 'joint_states', 'sensor_msgs/JointState topic',
              read_only=True),
    ParamSpec('joint_names', _SA, [],
              "joint order of the policy's state and actions; empty = the order of the first "
              'JointState message', read_only=True),
    # the robot's side of the policy
    ParamSpec('embodiment', _S, 'joints',
              'what the state and action vectors mean on this robot: a preset (joints, droid, '
              'aloha, so101, servo_ee) or an embodiment YAML file; joints = absolute joint '
              'positions of joint_names to one controller (output_mode, output_topic)',
              read_only=True),
    # outputs
    ParamSpec('output_mode', _S, 'trajectory',
              'trajectory: one JointTrajectory chunk per replan; stream: fixed-rate '
              'Float64MultiArray commands from an action queue', read_only=True,
              constraints='trajectory or stream'),
    ParamSpec('output_topic', _S, '/arm_controller/joint_trajectory',
              'controller command topic (JointTrajectory or Float64MultiArray)', read_only=True),
    ParamSpec('control_period', _D, 0.0,
              'seconds between two actions of a chunk; 0 = the checkpoint\'s own period',
              read_only=True, float_range=(0.0, 10.0)),
    ParamSpec('replan_steps', _I, 5,
              'run inference every replan_steps control periods (at most the chunk length)',
              read_only=True, int_range=(1, 10000)),
    ParamSpec('chunk_blending', _S, 'none',
              'none: each chunk is sampled on its own; rtc: real-time chunking, the actions that '
              'execute while inference runs are frozen to the previous chunk and the rest is '
              'inpainted (delay estimated from the measured latency, warm-up excluded)',
              read_only=True, constraints='none or rtc'),
    # safety
    ParamSpec('max_observation_age', _D, 1.0,
              'hold (publish nothing new) when a camera image or the joint state is older than '
              'this many seconds: age from its header stamp (arrival time when the stamp is 0)',
              float_range=(0.001, 3600.0)),
    ParamSpec('clock_offset', _D, 0.0,
              "seconds the input header stamps' clock runs ahead of this node's clock; "
              'subtracted from every stamp before ages and chunk stamps are computed',
              float_range=(-1e6, 1e6)),
    ParamSpec('joint_lower_limits', _DA, [], 'per-joint lower position limits; empty = none'),
    ParamSpec('joint_upper_limits', _DA, [], 'per-joint upper position limits; empty = none'),
    ParamSpec('max_joint_step', _D, 0.0,
              'largest change of one joint per control period, chained from the current joint '
              'state; 0 = no limit', float_range=(0.0, 1000.0)),
    ParamSpec('dry_run', _B, False, 'publish to ~/preview only, never to output_topic'),
    # lifecycle
    ParamSpec('autostart', _B, True,
              'configure and activate at startup (false: wait for lifecycle transitions, e.g. '
              '`ros2 lifecycle set /retain_policy configure`)', read_only=True),
    # evaluation
    ParamSpec('episode_log', _S, '',
              'JSON-lines episode log of ~/start_episode / ~/end_episode; empty = '
              f'$ROS_HOME/{DEFAULT_EPISODE_LOG} ($ROS_HOME defaults to ~/.ros)', read_only=True),
    ParamSpec('episode_tag', _S, '',
              "scene tag of the next episode, 'split=...;task=...;variation=...'"),
    ParamSpec('alpha_schedule', _SA, [],
              "alpha settings to evaluate ('0.5', 'alpha=1,language=0.8'); when set, each "
              '~/start_episode applies the next one (seeded, block-shuffled)', read_only=True),
    ParamSpec('schedule_seed', _I, 0, 'seed of the alpha schedule order', read_only=True),
    ParamSpec('schedule_repeats', _I, 1, 'episodes per schedule setting', read_only=True,
              int_range=(1, 100000)),
    ParamSpec('blind', _B, False,
              'hide alpha in ~/start_episode replies, logs and ~/merge_state (the episode log '
              'still records it)', read_only=True),
    # recording (retain_ros/ros/recording.py)
    ParamSpec('record', _B, False,
              'record every episode (~/start_episode to ~/end_episode) as a rosbag2 bag (mcap): '
              'cameras, joint states, instruction, commands, ~/merge_state, /diagnostics',
              read_only=True),
    ParamSpec('record_dir', _S, '',
              'folder of the episode bags (one <episode_id>/ each); empty = '
              '$ROS_HOME/retain_ros/bags', read_only=True),
    ParamSpec('record_jpeg_quality', _I, 0,
              'store raw camera images JPEG-encoded (sensor_msgs/CompressedImage on '
              '<topic>/compressed) at this quality; 0 = as received', read_only=True,
              int_range=(0, 100)),
    ParamSpec('record_max_queue_mb', _D, 64.0,
              'bound of the recording queue; beyond it frames are dropped and counted in the '
              'episode line', read_only=True, float_range=(0.1, 65536.0)),
)

SPECS: Dict[str, ParamSpec] = {p.name: p for p in PARAMS}


def declare_all(node) -> None:
    """Declare every parameter of :data:`PARAMS` on ``node`` with its descriptor.

    Empty array defaults cannot be typed by rclpy from the value itself, so those parameters are
    declared by type and, when no override was given, set to the empty array before the
    descriptor (possibly read-only) is installed.

    :raises ConfigError: when a value given on the command line or in a parameter file does not
        fit its descriptor (wrong type, out of range), naming the parameter, the value and what
        is allowed (rclpy raises ``ParameterException`` subclasses, ``TypeError`` or
        ``ValueError`` for those, depending on its version).
    """
    for spec in PARAMS:
        try:
            _declare(node, spec)
        except (ParameterException, TypeError, ValueError) as exc:
            raise ConfigError(declare_error(spec, _override(node, spec), exc)) from None


def _declare(node, spec: ParamSpec) -> None:
    empty_array = isinstance(spec.default, list) and not spec.default
    if not empty_array:
        node.declare_parameter(spec.name, spec.default, spec.descriptor())
        return
    writable = spec.descriptor()
    writable.read_only = False
    node.declare_parameter(spec.name, spec.type, writable)
    if node.get_parameter_or(spec.name).type_ == Parameter.Type.NOT_SET:
        node.set_parameters([Parameter(spec.name, spec.type, [])])
    node.set_descriptor(spec.name, spec.descriptor())


_NO_VALUE = object()


def _override(node, spec: ParamSpec) -> Any:
    """The value given for ``spec`` at startup (``-p``, ``--params-file``), or ``_NO_VALUE``.

    rclpy keeps the startup values in ``Node._parameter_overrides`` (rclpy 7 and 9 alike); there
    is no public accessor before the parameter is declared.
    """
    given = getattr(node, '_parameter_overrides', {}).get(spec.name)
    return _NO_VALUE if given is None else given.value


def declare_error(spec: ParamSpec, value: Any, exc: BaseException) -> str:
    """One line on why ``value`` cannot be the startup value of ``spec``.

    ``'<name>=<value>: <problem>, expected <type and range>'``, e.g. ``alpha=1.7: out of range,
    expected a double in [0, 1]`` or ``alpha='abc': a string, expected a double in [0, 1]``.

    :param spec: the parameter.
    :param value: the value given at startup (``_NO_VALUE`` when unknown).
    :param exc: what rclpy raised; its message is the problem when neither type nor range is.
    """
    if value is _NO_VALUE:
        value = spec.default
    shown = repr(value) if isinstance(value, str) else str(
        list(value) if isinstance(value, (list, tuple)) else value)
    try:
        given_type = Parameter.Type.from_parameter_value(value)
    except TypeError:
        given_type = None
    if given_type is not None and given_type != spec.type:
        problem = TYPE_WORDS.get(given_type, given_type.name.lower())
    elif given_type is not None and not spec.in_range(value):
        problem = 'out of range'
    else:
        problem = ' '.join(str(exc).split()) or type(exc).__name__
    return f'{spec.name}={shown}: {problem}, expected {spec.allowed()}'


def read_all(node) -> Dict[str, Any]:
    """Current value of every parameter as plain Python values (lists, not arrays)."""
    out: Dict[str, Any] = {}
    for spec in PARAMS:
        value = node.get_parameter(spec.name).value
        out[spec.name] = list(value) if spec.type in (_SA, _DA) else value
    return out


def group_overrides(values: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """Per-group alpha overrides for a MergeSpec: ``{'vision': None | float, ...}``."""
    out: Dict[str, Optional[float]] = {}
    for name, group in GROUP_OF_PARAM.items():
        value = float(values[name])
        out[group] = None if value < 0 else value
    return out


def check_group_alpha(name: str, value: float) -> Optional[str]:
    """Reason why a per-group alpha value is invalid, or None (valid: -1 or [0, 1])."""
    if value == FOLLOW or 0.0 <= value <= 1.0:
        return None
    return (f'{name}={value:g}: use -1 (follow alpha) or a value in [0, 1] '
            '(alpha = weight on the FINETUNED model)')


def names() -> List[str]:
    """All parameter names."""
    return [p.name for p in PARAMS]


class ConfigError(ValueError):
    """A parameter value the node cannot run with; the message names the parameter."""


@dataclass(frozen=True)
class NodeConfig:
    """The node's parameters, typed and validated once (:meth:`from_values`).

    Field names are the parameter names (see :data:`PARAMS` for their meaning). Live parameter
    sets build a new config with :meth:`updated`, which validates again; the node swaps the
    reference, so a reader always sees one consistent config.
    """

    pretrained_path: str
    finetuned_paths: Tuple[str, ...]
    tokenizer_path: str
    family: str
    recipe: str
    alpha: float
    alpha_vision: float
    alpha_language: float
    alpha_action: float
    keep_sources: str
    device: str
    dtype: str
    camera_topics: Tuple[str, ...]
    instruction_topic: str
    max_instruction_chars: int
    default_instruction: str
    joint_states_topic: str
    joint_names: Tuple[str, ...]
    embodiment: str
    output_mode: str
    output_topic: str
    control_period: float
    replan_steps: int
    chunk_blending: str
    max_observation_age: float
    clock_offset: float
    joint_lower_limits: Tuple[float, ...]
    joint_upper_limits: Tuple[float, ...]
    max_joint_step: float
    dry_run: bool
    autostart: bool
    episode_log: str
    episode_tag: str
    alpha_schedule: Tuple[str, ...]
    schedule_seed: int
    schedule_repeats: int
    blind: bool
    record: bool
    record_dir: str
    record_jpeg_quality: int
    record_max_queue_mb: float

    @classmethod
    def from_values(cls, values: Dict[str, Any]) -> 'NodeConfig':
        """Build and validate a config from plain parameter values.

        :raises ConfigError: naming the first invalid parameter and why.
        """
        kwargs = {}
        for f in fields(cls):
            if f.name not in values:
                raise ConfigError(f'parameter {f.name!r} is missing')
            value = values[f.name]
            spec = SPECS[f.name]
            try:
                kwargs[f.name] = _coerce(spec.type, value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f'{f.name}={value!r}: {exc}') from None
        config = cls(**kwargs)
        config.validate()
        return config

    def updated(self, changes: Dict[str, Any]) -> 'NodeConfig':
        """A validated copy with ``changes`` applied (unknown names are ignored)."""
        values = self.to_values()
        values.update({k: v for k, v in changes.items() if k in values})
        return NodeConfig.from_values(values)

    def to_values(self) -> Dict[str, Any]:
        """Plain values (lists for arrays), keyed by parameter name."""
        return {f.name: (list(getattr(self, f.name)) if isinstance(getattr(self, f.name), tuple)
                         else getattr(self, f.name)) for f in fields(self)}

    def validate(self) -> None:
        """Cross-field checks; :raises ConfigError: naming the parameter."""
        _one_of('recipe', self.recipe, RECIPES)
        _one_of('keep_sources', self.keep_sources, KEEP_SOURCES)
        _one_of('output_mode', self.output_mode, OUTPUT_MODES)
        _one_of('chunk_blending', self.chunk_blending, CHUNK_BLENDING)
        if not 0.0 <= self.alpha <= 1.0 or not math.isfinite(self.alpha):
            raise ConfigError(f'alpha={self.alpha:g}: use a value in [0, 1] (alpha = weight on '
                              'the FINETUNED model)')
        for name in GROUP_OF_PARAM:
            reason = check_group_alpha(name, getattr(self, name))
            if reason:
                raise ConfigError(reason)
        if not self.camera_topics or not all(t.strip() for t in self.camera_topics):
            raise ConfigError('camera_topics is empty (or holds an empty name); the policy needs '
                              'at least one camera')
        if len(set(self.camera_topics)) != len(self.camera_topics):
            raise ConfigError(f'camera_topics {list(self.camera_topics)} names a topic twice')
        if len(set(self.joint_names)) != len(self.joint_names):
            raise ConfigError(f'joint_names {list(self.joint_names)} names a joint twice')
        for name in ('instruction_topic', 'joint_states_topic', 'output_topic', 'embodiment'):
            if not getattr(self, name).strip():
                raise ConfigError(f'{name} is empty')
        if self.control_period < 0 or not math.isfinite(self.control_period):
            raise ConfigError(f'control_period={self.control_period:g}: use seconds >= 0 '
                              "(0 = the checkpoint's own period)")
        if self.replan_steps < 1:
            raise ConfigError(f'replan_steps={self.replan_steps}: use at least 1')
        if not self.max_observation_age > 0:
            raise ConfigError(f'max_observation_age={self.max_observation_age:g}: use > 0')
        if not math.isfinite(self.clock_offset):
            raise ConfigError('clock_offset must be finite')
        if self.max_instruction_chars < 1:
            raise ConfigError('max_instruction_chars must be at least 1')
        if self.schedule_repeats < 1:
            raise ConfigError('schedule_repeats must be at least 1')

    @property
    def finetuned(self) -> List[str]:
        """The non-empty finetuned paths."""
        return [p for p in self.finetuned_paths if p.strip()]


def _one_of(name: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f'{name}={value!r}: use one of {", ".join(allowed)}')


def _coerce(kind: Parameter.Type, value: Any) -> Any:
    if kind == _S:
        if not isinstance(value, str):
            raise TypeError('expected a string')
        return value
    if kind == _SA:
        if isinstance(value, str):
            raise TypeError('expected a list of strings')
        return tuple(str(v) for v in value)
    if kind == _DA:
        return tuple(float(v) for v in value)
    if kind == _D:
        return float(value)
    if kind == _I:
        if isinstance(value, bool) or int(value) != value:
            raise TypeError('expected an integer')
        return int(value)
    if kind == _B:
        if not isinstance(value, bool):
            raise TypeError('expected true or false')
        return value
    raise TypeError(f'unsupported parameter type {kind}')
