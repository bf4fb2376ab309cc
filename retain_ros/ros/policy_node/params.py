"""Parameters of the ``retain_policy`` node: one table (:data:`PARAMS`) of :class:`ParamSpec`.

Names are fixed by DESIGN.md ('Names users type'). ``read_only`` parameters are the ones that
cannot change while the node runs (topics, device, timing); the alpha parameters, the
checkpoint paths and the safety limits can change live (alpha and checkpoint changes re-merge the
weights in place).

The table is declared on the node by :mod:`.declare`; the values become a typed, validated
:class:`~retain_ros.ros.policy_node.config.NodeConfig` (:mod:`.config`); ``docs/parameters.md``
and ``config/policy.yaml`` are generated from it (:mod:`.param_reference`).
"""
from __future__ import annotations

from dataclasses import dataclass
import os
from typing import Any
from typing import Dict
from typing import Optional
from typing import Tuple

from rcl_interfaces.msg import FloatingPointRange
from rcl_interfaces.msg import IntegerRange
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.parameter import Parameter

from retain_ros.evaluation.sequential import MAX_BUDGET
from retain_ros.evaluation.sequential import SequentialDesign
from retain_ros.merging.live import KEEP_SOURCES
from retain_ros.merging.spec import ALPHA_PARAMS
from retain_ros.merging.spec import FOLLOW
from retain_ros.merging.spec import PARAM_OF_GROUP
from retain_ros.merging.spec import RECIPES
from retain_ros.policies.compile import COMPILE_MODES

#: parameters whose change triggers a re-merge (alpha parameters: merging/spec.py)
MERGE_PARAMS: Tuple[str, ...] = ALPHA_PARAMS + ('recipe',)
#: parameters whose change switches the checkpoints (one merge with the new sources)
CHECKPOINT_PARAMS: Tuple[str, ...] = ('pretrained_path', 'finetuned_paths')
#: group of each per-group alpha parameter
GROUP_OF_PARAM = {param: group for group, param in PARAM_OF_GROUP.items()}
#: default episode log, under ``$ROS_HOME`` (``~/.ros``, where ROS keeps its own logs)
DEFAULT_EPISODE_LOG = 'retain_ros/episodes.jsonl'
OUTPUT_MODES = ('trajectory', 'stream')
#: chunk blending modes (rtc: real-time chunking guidance from the previous chunk)
CHUNK_BLENDING = ('none', 'rtc')


def default_episode_log() -> str:
    """Return ``$ROS_HOME/retain_ros/episodes.jsonl`` (``~/.ros`` when ROS_HOME is unset)."""
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
        """Return the ``ParameterDescriptor`` rclpy enforces on every set."""
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
        """Return what a value must be, in words: ``'a double in [0, 1]'``, ``'an integer'``."""
        text = TYPE_WORDS.get(self.type, self.type.name.lower())
        if self.float_range is not None:
            text += f' in [{self.float_range[0]:g}, {self.float_range[1]:g}]'
        if self.int_range is not None:
            text += f' in [{self.int_range[0]}, {self.int_range[1]}]'
        if self.constraints:
            text += f' ({self.constraints})'
        return text

    def in_range(self, value: Any) -> bool:
        """Return whether a value of this parameter's type lies in its range (True without one)."""
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

#: the sequential comparison's defaults (one copy: :class:`SequentialDesign`)
_DESIGN = SequentialDesign()

PARAMS: Tuple[ParamSpec, ...] = (
    # checkpoints and merge
    ParamSpec('pretrained_path', _S, '',
              'pretrained checkpoint: LeRobot/HF dir, .safetensors, sharded index. '
              "Empty = the demo checkpoints made by 'retain-ros demo-train'. Settable between "
              'episodes (with finetuned_paths and alpha in one atomic set): the new pair is '
              'checked and merged in place; the set fails (old weights stay live) when that '
              'does.'),
    ParamSpec('finetuned_paths', _SA, [],
              'finetuned checkpoint(s); several for task-arithmetic / sequential recipes. Empty '
              'with an empty pretrained_path = the demo finetune. Settable between episodes '
              'like pretrained_path; the last one must have the running model\'s config.json '
              '(its normalization statistics come with it).'),
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
    ParamSpec('compile', _S, 'none',
              'torch.compile of the per-step model functions (prefix pass, velocity step), '
              'compiled by the warm-up at configure; live alpha stays exact and never '
              'recompiles. reduce-overhead (CUDA graphs) needs a CUDA device', read_only=True,
              constraints=f'one of {", ".join(COMPILE_MODES)}'),
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
    ParamSpec('sequential', _B, False,
              'compare the alpha_schedule settings with a sequential test: each episode updates '
              'it, a setting decided worse is dropped, ~/start_episode refuses once decided or '
              'the budget is spent (false = the fixed schedule, schedule_repeats each)',
              read_only=True),
    ParamSpec('sequential_reference', _S, _DESIGN.reference,
              "the setting of alpha_schedule every other is compared with ('alpha=1' = the "
              "finetuned model), or 'best' (all pairs: find the best)", read_only=True),
    ParamSpec('sequential_level', _D, _DESIGN.level,
              'family-wise false-positive rate over all comparisons (Holm-adjusted)',
              read_only=True, float_range=(0.0, 0.5), constraints='0 < level < 0.5'),
    ParamSpec('sequential_power', _D, _DESIGN.power, 'target power at the design gap',
              read_only=True, float_range=(0.0, 1.0), constraints='0 < power < 1'),
    ParamSpec('sequential_gap', _D, _DESIGN.gap,
              'design gap in success rate the test must detect with that power',
              read_only=True, float_range=(0.0, 1.0), constraints='0 < gap <= 1'),
    ParamSpec('sequential_budget', _I, _DESIGN.budget,
              'most episodes per setting (N_max); 64 reaches the default power at the default gap '
              'for up to 3 settings (2 settings need 46)', read_only=True,
              int_range=(2, MAX_BUDGET)),
    # recording (retain_ros/ros/policy_node/recording.py)
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
