"""``Embodiment.describe()``: the resolved layout as text (``retain-ros embodiment show``)."""
from __future__ import annotations

from typing import List

from retain_ros.embodiment.spec import JOINT_KINDS


def _span(start: int, size: int) -> str:
    if size == 0:
        return f'[{start}:?]'
    return f'[{start}]' if size == 1 else f'[{start}:{start + size}]'


def _slice_detail(sl) -> str:
    bits = []
    if sl.kind in JOINT_KINDS or sl.kind == 'gripper':
        bits.append(', '.join(sl.joints) or 'joint names from the first JointState')
    if sl.kind == 'joint_delta':
        bits.append('added to the state at the observation')
    if sl.kind == 'joint_velocity':
        bits.append(f'scale {sl.scale:g}/step, integrated from the observation')
    if sl.clip is not None:
        bits.append(f'clip [{sl.clip[0]:g}, {sl.clip[1]:g}]')
    if sl.kind == 'gripper':
        bits.append(f'policy {list(sl.policy_range)} -> actuator {list(sl.actuator_range)}'
                    f' (open..closed)')
        if sl.invert:
            bits.append('inverted')
        if sl.threshold is not None:
            bits.append(f'binarize at {sl.threshold:g} +- {sl.hysteresis:g}')
    if sl.kind in ('ee_delta', 'ee_pose'):
        bits.append(f'{sl.rotation} in frame {sl.frame or "(none)"}')
    if sl.kind == 'ee_delta':
        bits.append(f'{sl.position_scale:g} m and {sl.rotation_scale:g} rad per step at 1.0')
    if sl.ops.ops:
        bits.append('ops ' + sl.ops.describe())
    return '; '.join(bits)


def _limits(o) -> str:
    lim = o.limits
    bits = []
    if lim.lower:
        bits.append(f'lower {list(lim.lower)}')
    if lim.upper:
        bits.append(f'upper {list(lim.upper)}')
    if lim.max_step:
        bits.append(f'max_step {lim.max_step:g}')
    if lim.max_velocity:
        bits.append(f'max_velocity {list(lim.max_velocity)}')
    if lim.max_linear:
        bits.append(f'max_linear {lim.max_linear:g} m/s')
    if lim.max_angular:
        bits.append(f'max_angular {lim.max_angular:g} rad/s')
    if lim.workspace:
        bits.append(f'workspace {[list(v) for v in lim.workspace]}')
    return ', '.join(bits) or 'none'


def describe(emb) -> str:
    """Write the layout of ``emb`` (state, cameras, actions, outputs), one item a line."""
    lines: List[str] = [f'embodiment {emb.name} ({emb.source})']
    if emb.description:
        lines.append(f'  {emb.description}')
    period = emb.control_period
    if period is None:
        lines.append("control period: the checkpoint's own")
    else:
        lines.append(f'control period: {period:g} s ({1.0 / period:.3g} Hz)')
    if emb.needs_joint_names:
        lines.append('joint names: from the first JointState')
    lines.append(f'state ({emb.state_dim} values):')
    i = 0
    for src in emb.state_sources:
        what = (', '.join(src.joints) or 'joint names from the first JointState') \
            if src.type == 'joint_state' else f'xyz + {src.rotation}'
        field = f' {src.field}' if src.type == 'joint_state' else ''
        lines.append(f'  {_span(i, src.dim):<8} {src.type}{field} on {src.topic}: {what}; '
                     f'ops {src.ops.describe()}')
        i += src.dim
    lines.append('cameras:')
    for slot, topic in emb.cameras:
        shown = 'empty (zero image, masked)' if topic == 'empty' else topic
        lines.append(f'  {slot or "(slot from the checkpoint, in order)"} <- {shown}')
    lines.append(f'actions ({emb.action_dim} values):')
    used = {n for o in emb.outputs for n in o.slices}
    for sl in emb.slices:
        note = '' if sl.name in used else ' (feeds no output)'
        lines.append(f'  {_span(sl.start, sl.size):<8} {sl.name}: {sl.kind}{note}: '
                     f'{_slice_detail(sl)}')
    lines.append('outputs:')
    for o in emb.outputs:
        extra = ''
        if o.type == 'twist':
            extra = f', {o.rate:g} Hz, frame {o.frame or "(none)"}'
        if o.type == 'gripper_action':
            extra = f', {o.action_type}, max_effort {o.max_effort:g}'
        joints = ', '.join(o.names) or 'joint names from the first JointState'
        lines.append(f'  {o.name}: {o.type} on {o.topic}{extra}')
        lines.append(f'    from slices {", ".join(o.slices)}; values: {joints}')
        lines.append(f'    limits: {_limits(o)}')
    lines.append('checks: loaded and validated (sizes, names, limits); the checkpoint is checked '
                 'at start-up (state / action dims, camera slots)')
    return '\n'.join(lines)
