"""Randomly initialised tiny pi0 checkpoints to measure the policy node with (no training).

The tiny pi0 of :func:`retain_ros.policies.pi0.tiny_pi0_config` with its default widths (64 px
model input), identity normalization statistics and a byte-level tokenizer, in LeRobot layout:
what the latency and load measurements run when the model's quality does not matter.
"""
from __future__ import annotations

import os
from typing import Optional
from typing import Sequence
from typing import Tuple

#: state and action width of the measured robot (joints ``j0`` .. ``j3``)
JOINTS = ('j0', 'j1', 'j2', 'j3')


def write_random_tiny_pi0(out_dir: str, seed: int, cameras: Sequence[str] = ('base',),
                          state_dim: Optional[int] = None, action_dim: Optional[int] = None,
                          **config) -> str:
    """Write a randomly initialised tiny pi0 in LeRobot layout; return its path.

    The one writer of random tiny pi0 checkpoints (the benchmarks and the tests use it).

    :param out_dir: the checkpoint folder (its tokenizer goes to ``out_dir/tokenizer``).
    :param seed: weight initialisation seed.
    :param cameras: the policy's camera names.
    :param state_dim: state width (default: ``len(JOINTS)``).
    :param action_dim: action width (default: ``len(JOINTS)``).
    :param config: further :func:`~retain_ros.policies.pi0.tiny_pi0_config` arguments
        (``image_size``, ``chunk_size``, ``control_period`` ...); its defaults otherwise.
    """
    from retain_ros.policies.pi0 import load_tokenizer
    from retain_ros.policies.pi0 import NormStats
    from retain_ros.policies.pi0 import Pi0Policy
    from retain_ros.policies.pi0 import pi0_config_from_dict
    from retain_ros.policies.pi0 import save_byte_tokenizer
    from retain_ros.policies.pi0 import save_pi0_checkpoint
    from retain_ros.policies.pi0 import tiny_pi0_config

    out_dir = str(out_dir)
    state_dim = state_dim or len(JOINTS)
    action_dim = action_dim or len(JOINTS)
    spec = pi0_config_from_dict(tiny_pi0_config(state_dim=state_dim, action_dim=action_dim,
                                                camera_names=tuple(cameras), **config))
    tokenizer = load_tokenizer(save_byte_tokenizer(os.path.join(out_dir, 'tokenizer')))
    policy = Pi0Policy.from_spec(spec, tokenizer, NormStats.identity(state_dim, action_dim),
                                 init_weights=True, init_seed=seed)
    return save_pi0_checkpoint(policy, out_dir)


def write_random_pair(root: str, cameras: Sequence[str] = ('base',)) -> Tuple[str, str]:
    """Write a pretrained / finetuned pair (seeds 1 and 2) in ``root/pre`` and ``root/ft``.

    :return: ``(pretrained_path, finetuned_path)``.
    """
    return (write_random_tiny_pi0(os.path.join(root, 'pre'), 1, cameras),
            write_random_tiny_pi0(os.path.join(root, 'ft'), 2, cameras))
