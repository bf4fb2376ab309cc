"""Start-up of the policy node without ROS: which checkpoints, load + merge, the acting plan.

The node's ``configure`` transition is these three steps:

1. :func:`resolve_checkpoints`: ``pretrained_path`` / ``finetuned_paths``, or the demo
   checkpoints made by ``retain-ros demo-train`` when both are empty (also for a live switch of
   checkpoints, :func:`checkpoint_change`);
2. :func:`load_pair`: load both checkpoints and merge them on the target device
   (:func:`retain_ros.policies.loader.load_merged_policy`; with the ``compile`` option the
   node's warm-up, right after, is the compile);
3. :func:`plan_acting`: what acting needs from the configuration, the policy and the robot's
   embodiment: chunk length, control period, replanning, camera topics per slot.

``cfg`` is the node's validated configuration (``NodeConfig`` of the ROS layer); only
its attributes are read here. Every refusal is a :class:`StartupError` whose message says why.
"""
from __future__ import annotations

from dataclasses import dataclass
import logging
import os
import time
from typing import Any
from typing import Dict
from typing import List
from typing import Optional
from typing import Tuple

from retain_ros.runtime.merged_policy import MergedPolicy

LOG = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The node cannot start (missing checkpoints, bad parameters); the message says why."""


def merge_spec(cfg):
    """Return the :class:`~retain_ros.merging.spec.MergeSpec` the parameters ask for.

    The one place alpha parameters become a spec: a per-group alpha below 0 (``-1``) follows
    ``alpha``.
    """
    from retain_ros.merging.spec import ALPHA_PARAMS
    from retain_ros.merging.spec import MergeSpec

    return MergeSpec.from_params({name: getattr(cfg, name) for name in ALPHA_PARAMS},
                                 recipe=cfg.recipe)


def resolve_checkpoints(cfg, log=LOG) -> Tuple[str, List[str]]:
    """Return ``(pretrained, [finetuned, ...])`` from the parameters, or the demo checkpoints.

    :raises StartupError: one of the two given without the other, or the demo checkpoints
        missing (the message says how to make them).
    """
    pretrained = cfg.pretrained_path.strip()
    finetuned = cfg.finetuned
    if pretrained:
        if not finetuned:
            raise StartupError(
                'finetuned_paths is empty: give at least one finetuned checkpoint to merge '
                'with pretrained_path (e.g. -p finetuned_paths:=[/path/to/finetuned])')
        return pretrained, finetuned
    if finetuned:
        raise StartupError('finetuned_paths is set but pretrained_path is empty: give both')
    from retain_ros.demo.paths import demo_checkpoints
    from retain_ros.demo.paths import DemoCheckpointsMissing

    try:
        pretrained, finetuned_one = demo_checkpoints()
    except DemoCheckpointsMissing as exc:   # its message says what is missing
        raise StartupError(
            f'pretrained_path is empty and the demo checkpoints are missing: {exc}. '
            "Make them with 'retain-ros demo-train', or set pretrained_path and "
            'finetuned_paths') from exc
    pretrained, finetuned = os.fspath(pretrained), [os.fspath(finetuned_one)]
    missing = [p for p in [pretrained] + finetuned if not os.path.exists(p)]
    if missing:
        raise StartupError(
            f'demo checkpoints missing: {missing}. Make them with \'retain-ros demo-train\', '
            'or set pretrained_path and finetuned_paths')
    log.info(f'using the demo checkpoints: {pretrained} + {finetuned}')
    return pretrained, finetuned


def checkpoint_change(old_cfg, new_cfg, log=LOG) -> Optional[Tuple[str, List[str]]]:
    """Return the checkpoints a live parameter set switches to, or None when they stay.

    ``pretrained_path`` / ``finetuned_paths`` compared as given; changed ones are resolved like
    at start-up (:func:`resolve_checkpoints`: both empty = the demo checkpoints).

    :raises StartupError: the new values name no valid pair (the message says why).
    """
    if (old_cfg.pretrained_path.strip(), old_cfg.finetuned) == \
            (new_cfg.pretrained_path.strip(), new_cfg.finetuned):
        return None
    return resolve_checkpoints(new_cfg, log)


def load_pair(cfg, log=LOG):
    """Load the checkpoints and merge them; return ``(policy, merger)``.

    :raises StartupError: invalid merge parameters, or the load / merge failed (the reason).
    """
    pretrained, finetuned = resolve_checkpoints(cfg, log)
    try:
        spec = merge_spec(cfg)
    except ValueError as exc:
        raise StartupError(f'invalid merge parameters: {exc}') from exc
    from retain_ros.policies.loader import load_merged_policy

    compile_mode = getattr(cfg, 'compile', 'none')
    log.info(f'loading pretrained={pretrained} finetuned={finetuned} on device={cfg.device} '
             f'dtype={cfg.dtype} keep_sources={cfg.keep_sources} compile={compile_mode}')
    t0 = time.perf_counter()
    try:
        policy, merger = load_merged_policy(
            pretrained, finetuned, spec, family=cfg.family, device=cfg.device,
            dtype=cfg.dtype, keep_sources=cfg.keep_sources,
            tokenizer_path=cfg.tokenizer_path, warmup=False, compile=compile_mode)
    except Exception as exc:  # noqa: B902 - any load failure ends configure with its reason
        # broad on purpose: files, formats, torch and the device fail in many ways; none is
        # swallowed, each becomes the StartupError configure reports
        raise StartupError(f'cannot load and merge the checkpoints: {exc}') from exc
    log.info(f'loaded {getattr(policy, "name", "policy")} and merged in '
             f'{(time.perf_counter() - t0):.2f} s (merge {merger.state.merge_ms:.1f} ms): '
             f'{MergedPolicy(policy, merger).describe(cfg.blind)}')
    return policy, merger


@dataclass(frozen=True)
class ActingPlan:
    """What acting needs, fixed at configure.

    :param horizon: actions per chunk (the policy's ``chunk_size``).
    :param dt: control period (s): ``control_period``, else the embodiment's, else the policy's.
    :param replan_steps: actions executed before the next chunk replaces the rest.
    :param camera_topics: camera topic -> the policy's camera slot, in slot order.
    :param empty_cameras: slots with no camera (a zero image, masked by the policy).
    :param embodiment: the robot's :class:`~retain_ros.embodiment.Embodiment`.
    """

    horizon: int
    dt: float
    replan_steps: int
    camera_topics: Dict[str, str]
    empty_cameras: Tuple[str, ...]
    embodiment: Any

    @property
    def streams(self) -> bool:
        """Return whether any output takes one command per control period (a stream)."""
        return any(o.type != 'joint_trajectory' for o in self.embodiment.outputs)


def plan_acting(cfg, policy, embodiment, log=LOG) -> ActingPlan:
    """Return the :class:`ActingPlan` of ``policy`` on the robot ``embodiment``.

    :raises StartupError: no control period, or the embodiment does not fit the checkpoint
        (state / action sizes, camera slots, feature names).
    """
    from retain_ros.embodiment import EmbodimentError

    horizon = int(policy.chunk_size)
    dt = float(cfg.control_period) or float(embodiment.control_period or 0.0) \
        or float(policy.control_period or 0.0)
    if not dt > 0:
        raise StartupError('control_period is 0 and neither the embodiment nor the policy '
                           'declares a period')
    replan = int(cfg.replan_steps)
    if replan > horizon:
        log.warning(f'replan_steps={replan} exceeds the chunk length {horizon}; replanning '
                    f'every {horizon} steps')
        replan = horizon
    slots = list(policy.camera_names)
    try:
        embodiment.check_policy(int(policy.state_dim), int(policy.action_dim), slots,
                                getattr(policy, 'feature_names', None))
        cameras = embodiment.camera_map(slots)
    except EmbodimentError as exc:
        raise StartupError(f'embodiment {embodiment.name!r} does not fit the checkpoint: '
                           f'{exc}') from exc
    topics = {topic: slot for slot, topic in cameras if topic != 'empty'}
    empty = tuple(slot for slot, topic in cameras if topic == 'empty')
    log.info('cameras: ' + ', '.join(f'{t} -> {s}' for t, s in topics.items())
             + ''.join(f', (none) -> {s} (empty, masked)' for s in empty))
    return ActingPlan(horizon=horizon, dt=dt, replan_steps=replan, camera_topics=topics,
                      empty_cameras=empty, embodiment=embodiment)
