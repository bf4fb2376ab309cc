"""Parse and validate an embodiment mapping (already read from YAML) into spec objects.

Every check happens here, at load; errors name the file and the field path. ``$name`` string
values are replaced by ``params[name]`` first (:func:`substitute`).
"""
from __future__ import annotations

import re
from typing import Any
from typing import Dict
from typing import List
from typing import Mapping
from typing import NamedTuple
from typing import Optional
from typing import Sequence
from typing import Tuple

from retain_ros.embodiment.errors import fail
from retain_ros.embodiment.limits import parse_limits
from retain_ros.embodiment.operators import parse_ops
from retain_ros.embodiment.rotations import ROTATION_SIZES
from retain_ros.embodiment.spec import ActionSlice
from retain_ros.embodiment.spec import CameraSpec
from retain_ros.embodiment.spec import GRIPPER_ACTION_TYPES
from retain_ros.embodiment.spec import JOINT_FIELDS
from retain_ros.embodiment.spec import JOINT_KINDS
from retain_ros.embodiment.spec import KINDS
from retain_ros.embodiment.spec import MIN_TWIST_RATE
from retain_ros.embodiment.spec import OUTPUT_ALIASES
from retain_ros.embodiment.spec import OUTPUT_KINDS
from retain_ros.embodiment.spec import OUTPUT_TYPES
from retain_ros.embodiment.spec import OutputSpec
from retain_ros.embodiment.spec import POSE_NAMES
from retain_ros.embodiment.spec import STATE_TYPES
from retain_ros.embodiment.spec import StateSource
from retain_ros.embodiment.spec import TWIST_NAMES
from retain_ros.embodiment.values import Fields

_PARAM = re.compile(r'^\$([A-Za-z_][A-Za-z0-9_]*)$')
_ROTATIONS = tuple(ROTATION_SIZES)
_KIND_FIELDS = {
    'joint_position': ('joints', 'ops'),
    'joint_delta': ('joints', 'ops'),
    'joint_velocity': ('joints', 'ops', 'clip', 'scale'),
    'gripper': ('joints', 'policy_range', 'actuator_range', 'invert', 'binarize'),
    'ee_delta': ('rotation', 'frame', 'position_scale', 'rotation_scale', 'clip', 'ops'),
    'ee_pose': ('rotation', 'frame', 'ops'),
}


class Layout(NamedTuple):
    """Everything an embodiment file says, validated."""

    name: str
    description: str
    control_period: Optional[float]
    sources: Tuple[StateSource, ...]
    cameras: Tuple[CameraSpec, ...]
    slices: Tuple[ActionSlice, ...]
    outputs: Tuple[OutputSpec, ...]


def substitute(data: Any, params: Mapping[str, Any], source: str, path: str = '') -> Any:
    """Replace every ``'$name'`` string value by ``params[name]`` (recursively, a copy).

    :raises EmbodimentError: naming the field of an unknown ``$name``.
    """
    if isinstance(data, dict):
        return {k: substitute(v, params, source, f'{path}.{k}' if path else str(k))
                for k, v in data.items()}
    if isinstance(data, list):
        return [substitute(v, params, source, f'{path}[{i}]') for i, v in enumerate(data)]
    if isinstance(data, str):
        match = _PARAM.match(data)
        if match:
            key = match.group(1)
            if key not in params:
                raise fail(source, path, f'unknown parameter {data!r} (known: '
                           f'{", ".join(sorted(params)) or "none given"})')
            value = params[key]
            return list(value) if isinstance(value, tuple) else value
    return data


def parse(data: Any, source: str) -> Layout:
    """Validate a substituted embodiment mapping.

    :param data: the YAML document after :func:`substitute`.
    :param source: the file name used in error messages.
    :return: the :class:`Layout`.
    :raises EmbodimentError: naming the file and the field.
    """
    top = Fields(data, '', source, required=('name', 'state', 'cameras', 'actions', 'outputs'),
                 optional=('description', 'control_period'))
    period = top.number('control_period', None, positive=True)
    sources = tuple(_source(f, source) for f in top.items('state'))
    cameras = _cameras(top, source)
    slices = _slices(top, source)
    _check_anchors(source, sources, slices)
    outputs = _outputs(top, source, slices, sources)
    return Layout(top.string('name'), top.string('description', ''), period, sources, cameras,
                  slices, outputs)


def _check_anchors(source: str, sources: Sequence[StateSource],
                   slices: Sequence[ActionSlice]) -> None:
    """joint_delta / joint_velocity joints must be read (positions) by a state source."""
    joint_sources = [s for s in sources if s.type == 'joint_state']
    if any(not s.joints for s in joint_sources):
        return
    known = [j for s in joint_sources if s.field == 'position' for j in s.joints]
    for i, sl in enumerate(slices):
        if sl.kind not in ('joint_delta', 'joint_velocity'):
            continue
        for j in sl.joints:
            if j not in known:
                raise fail(source, f'actions[{i}].joints', f'unknown joint {j!r}: a {sl.kind} '
                           'slice starts from the measured position, but no joint_state source '
                           f'reads it (state joints: {", ".join(known) or "none"})')


def _source(f: Fields, source: str) -> StateSource:
    f.check_keys(required=('topic', 'type'), optional=('field', 'joints', 'rotation', 'ops'))
    kind = f.choice('type', STATE_TYPES)
    if kind == 'pose':
        f.check_keys(required=('topic', 'type', 'rotation'), optional=('ops',))
        rotation = f.choice('rotation', _ROTATIONS)
        dim = 3 + ROTATION_SIZES[rotation]
        return StateSource(f.string('topic'), kind, rotation=rotation,
                           ops=parse_ops(f.raw('ops'), dim, source, f.at('ops')))
    f.check_keys(required=('topic', 'type', 'joints'), optional=('field', 'ops'))
    joints = f.names('joints', allow_empty=True)
    return StateSource(f.string('topic'), kind, field=f.choice('field', JOINT_FIELDS, 'position'),
                       joints=joints,
                       ops=parse_ops(f.raw('ops'), len(joints) or None, source, f.at('ops')))


def _cameras(top: Fields, source: str) -> Tuple[CameraSpec, ...]:
    raw = top.raw('cameras')
    if isinstance(raw, list) and all(isinstance(t, str) for t in raw):
        cams = tuple(CameraSpec(None, t) for t in raw)
    else:
        cams = tuple(CameraSpec(f.string('slot'), f.string('topic'))
                     for f in top.items('cameras', keys=(('slot', 'topic'), ())))
    slots: Dict[str, int] = {}
    topics: Dict[str, int] = {}
    for i, cam in enumerate(cams):
        if not cam.topic.strip():
            raise fail(source, f'cameras[{i}]', 'empty topic name')
        if cam.slot is not None and cam.slot in slots:
            raise fail(source, f'cameras[{i}].slot', f'duplicate slot {cam.slot!r} (also '
                       f'cameras[{slots[cam.slot]}])')
        if not cam.empty and cam.topic in topics:
            raise fail(source, f'cameras[{i}].topic', f'duplicate topic {cam.topic!r} (also '
                       f'cameras[{topics[cam.topic]}])')
        if cam.slot is not None:
            slots[cam.slot] = i
        topics[cam.topic] = i
    return cams


def _slices(top: Fields, source: str) -> Tuple[ActionSlice, ...]:
    out: List[ActionSlice] = []
    start = 0
    for f in top.items('actions'):
        f.check_keys(required=('name', 'kind'), optional=sum(_KIND_FIELDS.values(), ()))
        name = f.string('name')
        if any(s.name == name for s in out):
            raise fail(source, f.at('name'), f'duplicate slice name {name!r}')
        kind = f.choice('kind', KINDS)
        f.check_keys(required=('name', 'kind') + (('joints',) if kind in JOINT_KINDS + ('gripper',)
                                                  else ()),
                     optional=_KIND_FIELDS[kind], context=f'kind {kind}')
        sl = _slice(f, source, name, kind, start)
        out.append(sl)
        start += sl.size
    return tuple(out)


def _slice(f: Fields, source: str, name: str, kind: str, start: int) -> ActionSlice:
    if kind in ('ee_delta', 'ee_pose'):
        rotation = f.choice('rotation', _ROTATIONS, 'axis_angle')
        size = 3 + ROTATION_SIZES[rotation]
        kwargs = dict(rotation=rotation, frame=f.string('frame', ''),
                      ops=parse_ops(f.raw('ops'), size, source, f.at('ops')))
        if kind == 'ee_delta':
            kwargs.update(clip=f.interval('clip'),
                          position_scale=f.number('position_scale', 1.0, positive=True),
                          rotation_scale=f.number('rotation_scale', 1.0, positive=True))
        return ActionSlice(name, kind, start, size, **kwargs)
    joints = f.names('joints', allow_empty=kind != 'gripper')
    if kind == 'gripper':
        pr = f.interval('policy_range', (0.0, 1.0), ordered=False)
        ar = f.interval('actuator_range', None, ordered=False, required=True)
        threshold, hysteresis = None, 0.0
        if f.raw('binarize') is not None:
            b = f.sub('binarize', required=('threshold',), optional=('hysteresis',))
            threshold = b.number('threshold')
            hysteresis = b.number('hysteresis', 0.0, non_negative=True)
        return ActionSlice(name, kind, start, len(joints), joints, policy_range=pr,
                           actuator_range=ar, invert=f.boolean('invert', False),
                           threshold=threshold, hysteresis=hysteresis)
    kwargs = {}
    if kind == 'joint_velocity':
        kwargs = dict(clip=f.interval('clip'), scale=f.number('scale', 1.0, positive=True))
    return ActionSlice(name, kind, start, len(joints), joints,
                       ops=parse_ops(f.raw('ops'), len(joints) or None, source, f.at('ops')),
                       **kwargs)


def _outputs(top: Fields, source: str, slices: Sequence[ActionSlice],
             sources: Sequence[StateSource]) -> Tuple[OutputSpec, ...]:
    by_name = {s.name: s for s in slices}
    out: List[OutputSpec] = []
    for f in top.items('outputs'):
        f.check_keys(required=('name', 'type', 'topic', 'slices'),
                     optional=('limits', 'rate', 'action_type', 'max_effort'))
        name = f.string('name')
        if any(o.name == name for o in out):
            raise fail(source, f.at('name'), f'duplicate output name {name!r}')
        raw_type = f.raw('type')
        kind = OUTPUT_ALIASES.get(raw_type, raw_type) if isinstance(raw_type, str) else raw_type
        if kind not in OUTPUT_TYPES:
            raise fail(source, f.at('type'), f'unknown output type {raw_type!r} (use one of '
                       f'{", ".join(OUTPUT_TYPES)}; the legacy output_mode values trajectory / '
                       'stream also work)')
        topic = f.string('topic')
        if any(o.topic == topic for o in out):
            raise fail(source, f.at('topic'), f'topic {topic!r} is used by two outputs')
        used = _output_slices(f, source, kind, by_name)
        names, frame = _output_names(f, source, kind, used)
        if kind == 'pose' and used[0].kind == 'ee_delta' and \
                not any(s.type == 'pose' for s in sources):
            raise fail(source, f.at('slices'), 'a pose output fed by ee_delta needs the '
                       'end-effector pose in the state (a state source of type pose)')
        if f.raw('rate') is not None and kind != 'twist':
            raise fail(source, f.at('rate'), f'rate is for twist outputs only, not {kind}')
        rate = f.number('rate', MIN_TWIST_RATE, positive=True) if kind == 'twist' else 0.0
        if rate and rate < MIN_TWIST_RATE:
            raise fail(source, f.at('rate'), f'{rate:g} Hz is too slow: MoveIt Servo needs a '
                       f'steady stream, use at least {MIN_TWIST_RATE:g} Hz')
        for key in ('action_type', 'max_effort'):
            if f.raw(key) is not None and kind != 'gripper_action':
                raise fail(source, f.at(key), f'{key} is for gripper_action outputs only')
        action_type = max_effort = None
        if kind == 'gripper_action':
            action_type = f.choice('action_type', GRIPPER_ACTION_TYPES, 'gripper_command')
            max_effort = f.number('max_effort', 0.0, non_negative=True)
        default_range = used[0].actuator_range if kind == 'gripper_action' else None
        limits = parse_limits(f, source, kind, names, default_range)
        out.append(OutputSpec(name, kind, topic, tuple(s.name for s in used), names, limits,
                              rate, action_type or '', max_effort or 0.0, frame))
    return tuple(out)


def _output_slices(f: Fields, source: str, kind: str,
                   by_name: Mapping[str, ActionSlice]) -> List[ActionSlice]:
    names = f.names('slices')
    used = []
    for i, n in enumerate(names):
        if n not in by_name:
            raise fail(source, f'{f.at("slices")}[{i}]', f'unknown slice {n!r} (slices: '
                       f'{", ".join(by_name) or "none"})')
        sl = by_name[n]
        if sl.kind not in OUTPUT_KINDS[kind]:
            raise fail(source, f'{f.at("slices")}[{i}]', f'slice {n!r} of kind {sl.kind} cannot '
                       f'feed a {kind} output (kinds: {", ".join(OUTPUT_KINDS[kind])})')
        used.append(sl)
    single = kind in ('twist', 'gripper_action', 'pose')
    if single and len(used) != 1:
        raise fail(source, f.at('slices'), f'a {kind} output takes exactly one slice')
    if kind == 'gripper_action' and used[0].size != 1:
        raise fail(source, f.at('slices'), 'a gripper_action output takes a gripper slice of '
                   f'one joint, {used[0].name!r} has {used[0].size}')
    return used


def _output_names(f: Fields, source: str, kind: str,
                  used: Sequence[ActionSlice]) -> Tuple[Tuple[str, ...], str]:
    if kind == 'twist':
        return TWIST_NAMES, used[0].frame
    if kind == 'pose':
        return POSE_NAMES, used[0].frame
    names: List[str] = []
    for sl in used:
        for j in sl.joints:
            if j in names:
                raise fail(source, f.at('slices'), f'joint {j!r} is commanded twice (slices '
                           f'{", ".join(s.name for s in used)})')
            names.append(j)
    return tuple(names), ''
