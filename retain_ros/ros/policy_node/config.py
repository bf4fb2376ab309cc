"""The node's parameters as one typed, validated, immutable value: :class:`NodeConfig`.

Built from the parameter values (:meth:`NodeConfig.from_values`) at startup and at configure;
a live set builds the new config once with :meth:`NodeConfig.updated` (validated in the node's
on-set callback, installed by its post-set callback), so a reader always sees one consistent
config. Every refusal is a :class:`ConfigError` naming the parameter.
"""
from __future__ import annotations

from dataclasses import dataclass
from dataclasses import fields
import math
from typing import Any
from typing import Dict
from typing import List
from typing import Optional
from typing import Tuple

from rclpy.parameter import Parameter

from retain_ros.evaluation.schedule import describe
from retain_ros.evaluation.schedule import parse_setting
from retain_ros.evaluation.sequential import MAX_BUDGET
from retain_ros.merging.errors import SpecError
from retain_ros.merging.live import KEEP_SOURCES
from retain_ros.merging.spec import RECIPES
from retain_ros.policies.compile import COMPILE_MODES
from retain_ros.ros.policy_node.params import CHUNK_BLENDING
from retain_ros.ros.policy_node.params import FOLLOW
from retain_ros.ros.policy_node.params import GROUP_OF_PARAM
from retain_ros.ros.policy_node.params import OUTPUT_MODES
from retain_ros.ros.policy_node.params import SPECS

_TYPE = Parameter.Type


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
    compile: str
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
    sequential: bool
    sequential_reference: str
    sequential_level: float
    sequential_power: float
    sequential_gap: float
    sequential_budget: int
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
        """Return a validated copy with ``changes`` applied (unknown names are ignored)."""
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
        _one_of('compile', self.compile, COMPILE_MODES)
        if self.compile == 'reduce-overhead' and self.device.strip().lower() == 'cpu':
            raise ConfigError("compile='reduce-overhead' records CUDA graphs and needs a CUDA "
                              "device, but device='cpu': use compile='default' there")
        _one_of('output_mode', self.output_mode, OUTPUT_MODES)
        _one_of('chunk_blending', self.chunk_blending, CHUNK_BLENDING)
        if not 0.0 <= self.alpha <= 1.0 or not math.isfinite(self.alpha):
            raise ConfigError(f'alpha={self.alpha:g}: use a value in [0, 1] (alpha = weight on '
                              'the FINETUNED model)')
        for name in GROUP_OF_PARAM:
            reason = _check_group_alpha(name, getattr(self, name))
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
        _check_sequential(self)

    @property
    def finetuned(self) -> List[str]:
        """The non-empty finetuned paths."""
        return [p for p in self.finetuned_paths if p.strip()]


def _one_of(name: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f'{name}={value!r}: use one of {", ".join(allowed)}')


def _coerce(kind: Parameter.Type, value: Any) -> Any:
    if kind == _TYPE.STRING:
        if not isinstance(value, str):
            raise TypeError('expected a string')
        return value
    if kind == _TYPE.STRING_ARRAY:
        if isinstance(value, str):
            raise TypeError('expected a list of strings')
        return tuple(str(v) for v in value)
    if kind == _TYPE.DOUBLE_ARRAY:
        return tuple(float(v) for v in value)
    if kind == _TYPE.DOUBLE:
        return float(value)
    if kind == _TYPE.INTEGER:
        if isinstance(value, bool) or int(value) != value:
            raise TypeError('expected an integer')
        return int(value)
    if kind == _TYPE.BOOL:
        if not isinstance(value, bool):
            raise TypeError('expected true or false')
        return value
    raise TypeError(f'unsupported parameter type {kind}')


def _check_group_alpha(name: str, value: float) -> Optional[str]:
    """Return why a per-group alpha value is invalid, or None (valid: -1 or [0, 1])."""
    if value == FOLLOW or 0.0 <= value <= 1.0:
        return None
    return (f'{name}={value:g}: use -1 (follow alpha) or a value in [0, 1] '
            '(alpha = weight on the FINETUNED model)')


def _check_sequential(config: NodeConfig) -> None:
    """Refuse sequential-evaluation parameters the test cannot run with (one line each)."""
    for name, allowed, ok in (
            ('sequential_level', '(0, 0.5)', lambda v: 0.0 < v < 0.5),
            ('sequential_power', '(0, 1)', lambda v: 0.0 < v < 1.0),
            ('sequential_gap', '(0, 1]', lambda v: 0.0 < v <= 1.0)):
        value = getattr(config, name)
        if not ok(value):
            raise ConfigError(f'{name}={value:g}: use a value in {allowed}')
    if not 2 <= config.sequential_budget <= MAX_BUDGET:
        raise ConfigError(f'sequential_budget={config.sequential_budget}: use 2 to {MAX_BUDGET} '
                          'episodes per setting')
    reference = config.sequential_reference.strip()
    if not reference:
        raise ConfigError("sequential_reference is empty: use a setting of alpha_schedule "
                          "(e.g. 'alpha=1') or 'best'")
    if not config.sequential:
        return
    settings = [s for s in config.alpha_schedule if s.strip()]
    if len(settings) < 2:
        raise ConfigError(f'sequential=true needs alpha_schedule with at least 2 settings to '
                          f'compare, got {settings}')
    if reference == 'best':
        return
    try:
        wanted = describe(parse_setting(reference))
    except SpecError as exc:
        raise ConfigError(f"sequential_reference={reference!r}: {exc} (or use 'best')") \
            from None
    try:
        known = [describe(parse_setting(s)) for s in settings]
    except SpecError as exc:
        raise ConfigError(f'alpha_schedule={settings}: {exc}') from None
    if wanted not in known:
        raise ConfigError(f"sequential_reference={reference!r} is not one of alpha_schedule "
                          f"{settings}: add it there, or use 'best'")
