"""The ``limits`` block of an output: which fields each type takes, sizes checked at load."""
from __future__ import annotations

from typing import Optional
from typing import Sequence
from typing import Tuple

from retain_ros.embodiment.spec import OUTPUT_LIMITS
from retain_ros.embodiment.spec import OutputLimits
from retain_ros.embodiment.values import Fields


def parse_limits(out: Fields, source: str, kind: str, names: Sequence[str],
                 default_range: Optional[Tuple[float, float]] = None) -> OutputLimits:
    """Validate ``outputs[i].limits`` for an output of type ``kind`` over ``names``.

    Per-joint lists must have one value per joint (checked when the joints are known: an empty
    joint list is bound later and checked again then). ``max_velocity`` may be one number.

    :param out: the output's :class:`Fields`.
    :param source: the file name.
    :param kind: the output type.
    :param names: the output's joint names (possibly empty when not bound yet).
    :param default_range: gripper_action: the actuator range, the default lower / upper.
    :return: the :class:`OutputLimits`.
    :raises EmbodimentError: naming ``outputs[i].limits.<field>``.
    """
    if out.raw('limits') is None:
        raw = {}
    else:
        raw = out.sub('limits').data
    lim = Fields(raw, out.at('limits'), source, optional=OUTPUT_LIMITS[kind])
    n = len(names) or None
    lower, upper = _per_joint(lim, 'lower', n), _per_joint(lim, 'upper', n)
    if lower and upper:
        if len(lower) != len(upper):
            raise lim.error('upper', f'has {len(upper)} value(s), lower has {len(lower)}')
        for i, (lo, hi) in enumerate(zip(lower, upper)):
            if lo > hi:
                joint = f' ({names[i]!r})' if i < len(names) else ''
                raise lim.error('lower', f'[{i}]{joint} {lo:g} is above upper {hi:g}')
    if kind == 'gripper_action' and default_range is not None:
        lower = lower or (min(default_range),)
        upper = upper or (max(default_range),)
    max_velocity = lim.numbers('max_velocity') if isinstance(lim.raw('max_velocity'), list) \
        else tuple(x for x in (lim.number('max_velocity', None, positive=True),) if x)
    if max_velocity and len(max_velocity) != 1 and n is not None and len(max_velocity) != n:
        raise lim.error('max_velocity', f'has {len(max_velocity)} value(s) for {n} joint(s) '
                        f'{list(names)}: give one per joint or a single number')
    if any(v <= 0 for v in max_velocity):
        raise lim.error('max_velocity', f'values must be > 0, got {list(max_velocity)}')
    workspace = None
    if lim.raw('workspace') is not None:
        workspace = _workspace(lim)
    return OutputLimits(lower=lower, upper=upper,
                        max_step=lim.number('max_step', 0.0, non_negative=True),
                        max_velocity=max_velocity,
                        max_linear=lim.number('max_linear', 0.0, non_negative=True),
                        max_angular=lim.number('max_angular', 0.0, non_negative=True),
                        workspace=workspace)


def _per_joint(lim: Fields, key: str, n: Optional[int]) -> Tuple[float, ...]:
    values = lim.numbers(key)
    if values and n is not None and len(values) != n:
        raise lim.error(key, f'has {len(values)} value(s) but the output has {n} joint(s): give '
                        'one value per joint (a single value is not broadcast) or leave it empty')
    return values


def _workspace(lim: Fields):
    raw = lim.raw('workspace')
    ok = isinstance(raw, list) and len(raw) == 2 and all(
        isinstance(r, list) and len(r) == 3 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in r) for r in raw)
    if not ok:
        raise lim.error('workspace', f'must be [[xmin, ymin, zmin], [xmax, ymax, zmax]], got '
                        f'{raw!r}')
    lo, hi = (tuple(float(v) for v in r) for r in raw)
    if any(a > b for a, b in zip(lo, hi)):
        raise lim.error('workspace', f'min {list(lo)} is above max {list(hi)}')
    return lo, hi
