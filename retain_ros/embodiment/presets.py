"""Find and load embodiment files: presets by name (``config/embodiments/NAME.yaml``) or paths.

Presets are looked up, in order, in the source tree next to the imported package (a checkout
run in place), in the installed share directory (``ament_index_python``'s
``get_package_share_directory('retain_ros')`` when importable), then in a pip install's
``<sys.prefix>/share/retain_ros/config/embodiments``. The first directory that holds the file
wins, so a checkout never picks up an older installed copy.
"""
from __future__ import annotations

import os
import sys
from typing import Any
from typing import Dict
from typing import List
from typing import Mapping
from typing import Optional

import yaml

from retain_ros.embodiment.embodiment import Embodiment
from retain_ros.embodiment.errors import EmbodimentError
from retain_ros.embodiment.loader import substitute

DEFAULT_PRESET = 'joints'
#: the policy node's defaults for the parameters the presets use (``joints`` needs them)
NODE_DEFAULTS: Dict[str, Any] = {
    'joint_states_topic': 'joint_states',
    'joint_names': [],
    'output_mode': 'trajectory',
    'output_topic': '/arm_controller/joint_trajectory',
    'joint_lower_limits': [],
    'joint_upper_limits': [],
    'max_joint_step': 0.0,
    'camera_topics': ['camera/image_raw'],
}
_SUBDIR = os.path.join('config', 'embodiments')


def preset_dirs() -> List[str]:
    """List the directories searched for presets, in order (those that exist)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    dirs = [os.path.join(os.path.dirname(package), _SUBDIR)]
    try:
        from ament_index_python.packages import get_package_share_directory
        dirs.append(os.path.join(get_package_share_directory('retain_ros'), _SUBDIR))
    except Exception:  # noqa: BLE001 - not installed / no ament index: fall through
        pass
    dirs.append(os.path.join(sys.prefix, 'share', 'retain_ros', _SUBDIR))
    seen: List[str] = []
    for d in dirs:
        if os.path.isdir(d) and os.path.realpath(d) not in [os.path.realpath(s) for s in seen]:
            seen.append(d)
    return seen


def list_presets() -> List[str]:
    """List the names of the available presets (sorted)."""
    names = set()
    for d in preset_dirs():
        names.update(f[:-5] for f in os.listdir(d) if f.endswith('.yaml'))
    return sorted(names)


def find_embodiment_file(name_or_path: str) -> str:
    """Find the YAML file of a preset name or a path.

    :raises EmbodimentError: when neither a file nor a preset of that name exists.
    """
    text = str(name_or_path).strip() or DEFAULT_PRESET
    looks_like_path = os.sep in text or text.endswith(('.yaml', '.yml'))
    if os.path.isfile(text):
        return text
    if not looks_like_path:
        for d in preset_dirs():
            path = os.path.join(d, text + '.yaml')
            if os.path.isfile(path):
                return path
    raise EmbodimentError(f'embodiment {text!r}: no such file and no preset of that name '
                          f'(presets: {", ".join(list_presets()) or "none found"})')


def load_embodiment(name_or_path: str = DEFAULT_PRESET,
                    params: Optional[Mapping[str, Any]] = None) -> Embodiment:
    """Load, substitute and validate an embodiment.

    :param name_or_path: a preset name (``droid``) or a YAML file path.
    :param params: values for ``$name`` strings (the node's parameters); the node's defaults
        (:data:`NODE_DEFAULTS`) fill what is not given.
    :return: the :class:`Embodiment`.
    :raises EmbodimentError: naming the file and the field.
    """
    path = find_embodiment_file(name_or_path)
    source = os.path.basename(path)
    try:
        with open(path, encoding='utf-8') as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        detail = str(exc).replace('\n', ' ')
        raise EmbodimentError(f'{source}: not valid YAML: {detail}') from None
    except OSError as exc:
        raise EmbodimentError(f'{source}: cannot read: {exc}') from None
    return load_embodiment_data(data, source, params)


def load_embodiment_data(data: Any, source: str = '<embodiment>',
                         params: Optional[Mapping[str, Any]] = None) -> Embodiment:
    """Like :func:`load_embodiment` for a mapping already in memory (tests, generated files)."""
    merged = dict(NODE_DEFAULTS)
    merged.update(params or {})
    if not isinstance(data, dict):
        raise EmbodimentError(f'{source}: must be a YAML mapping, got {type(data).__name__}')
    return Embodiment(substitute(data, merged, source), source)
