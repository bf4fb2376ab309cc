"""Does an embodiment fit a checkpoint? Sizes, camera slots and LeRobot feature names."""
from __future__ import annotations

from typing import List
from typing import Mapping
from typing import Optional
from typing import Sequence

from retain_ros.embodiment.errors import EmbodimentError
from retain_ros.embodiment.spec import JOINT_KINDS

IMAGE_PREFIX = 'observation.images.'


def camera_slot(name: str) -> str:
    """Strip LeRobot's ``observation.images.`` prefix from a camera slot name."""
    return name[len(IMAGE_PREFIX):] if name.startswith(IMAGE_PREFIX) else name


def _feature(name: str) -> str:
    return name[:-len('.pos')] if name.endswith('.pos') else name


def check_policy(emb, state_dim: int, action_dim: int, camera_slots: Sequence[str],
                 feature_names: Optional[Mapping[str, Sequence[str]]] = None) -> None:
    """Check an :class:`~retain_ros.embodiment.embodiment.Embodiment` against a checkpoint.

    Before the joint names are bound (``needs_joint_names``) only what is known is checked.
    Camera slots compare without the ``observation.images.`` prefix.

    :param emb: the embodiment.
    :param state_dim: the checkpoint's state length.
    :param action_dim: the checkpoint's action length.
    :param camera_slots: the checkpoint's camera slots, in order.
    :param feature_names: optional ``{'state': [...], 'action': [...]}`` LeRobot names
        (``shoulder_pan.pos``); compared position by position with the joint names.
    :raises EmbodimentError: naming both sides of the first mismatch.
    """
    src = emb.source
    bound = not emb.needs_joint_names
    parts = [(s.topic, s.dim) for s in emb.state_sources]
    _sizes(src, 'state', 'sources', parts, emb.state_dim, int(state_dim), 'state dim', bound)
    parts = [(s.name, s.size) for s in emb.slices]
    _sizes(src, 'actions', 'slices', parts, emb.action_dim, int(action_dim), 'action dim', bound)
    check_cameras(emb, [str(s) for s in camera_slots])
    if feature_names and bound:
        _names(src, 'state', _state_joints(emb), feature_names.get('state'))
        _names(src, 'actions', _action_joints(emb), feature_names.get('action'))


def _sizes(src, what, noun, parts, total, expected, label, bound) -> None:
    if total == expected or (not bound and total <= expected):
        return
    detail = ' + '.join(f'{n} {d}' for n, d in parts)
    raise EmbodimentError(f'{src}: {what}: {noun} give {total} value(s) ({detail}) but the '
                          f"checkpoint's {label} is {expected}")


def check_cameras(emb, slots: List[str]) -> None:
    """Check the embodiment's cameras against the checkpoint's slots."""
    cams = emb.camera_specs
    src = emb.source
    if emb.needs_camera_slots:
        if len(cams) != len(slots):
            topics = [c.topic for c in cams]
            raise EmbodimentError(
                f'{src}: cameras: {len(topics)} camera topic(s) {topics} for {len(slots)} '
                f'checkpoint camera slot(s) {slots}: give one topic per slot, in that order')
        return
    ours = [camera_slot(c.slot) for c in cams]
    theirs = [camera_slot(s) for s in slots]
    for s in theirs:
        if s not in ours:
            raise EmbodimentError(
                f"{src}: cameras: the checkpoint's camera slot {s!r} has no camera (the file "
                f'has {ours}); add {{slot: {s}, topic: ...}} or topic: empty for a masked slot')
    for s in ours:
        if s not in theirs:
            raise EmbodimentError(f'{src}: cameras: slot {s!r} is not a camera slot of the '
                                  f'checkpoint (it has {theirs})')


def _state_joints(emb) -> List[Optional[str]]:
    out: List[Optional[str]] = []
    for s in emb.state_sources:
        if s.type == 'joint_state' and s.field == 'position':
            out += list(s.joints)
        else:
            out += [None] * s.dim
    return out


def _action_joints(emb) -> List[Optional[str]]:
    out: List[Optional[str]] = []
    for s in emb.slices:
        out += list(s.joints) if s.kind in JOINT_KINDS + ('gripper',) else [None] * s.size
    return out


def _names(src, what, ours: List[Optional[str]], theirs: Optional[Sequence[str]]) -> None:
    if theirs is None:
        return
    theirs = [_feature(str(n)) for n in theirs]
    if len(theirs) != len(ours):
        raise EmbodimentError(f'{src}: {what}: the checkpoint names {len(theirs)} value(s) '
                              f'{theirs}, the embodiment gives {len(ours)}')
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if a is not None and a != b:
            raise EmbodimentError(f'{src}: {what}[{i}]: joint {a!r} but the checkpoint names '
                                  f'this value {b!r} (features {theirs})')
