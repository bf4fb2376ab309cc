"""A small simulated robot: a planar 3-joint arm over a table with coloured blocks.

Pure Python (numpy + OpenCV); no ROS. The world is kinematic: each joint moves toward its target
at a bounded velocity; the camera looks down on the table and renders an RGB ``uint8`` image.

Geometry (metres, radians): the arm's base is at the origin, the table in front of it is the
``y > 0`` half plane. Joint 0 turns the first link away from the ``+y`` axis (counter-clockwise,
i.e. toward ``-x``); joints 1 and 2 are relative to the previous link. The end effector (the
gripper) is the tip of the last link.

Typical use (what the ROS sim node and the offline evaluator do)::

    world = SimWorld(image_size=96)
    info = world.reset('reach_yellow', 'new_ood', seed=3)
    while not world.success():
        world.set_joint_targets(q_next)
        world.step(0.1)
        image = world.render()
"""
from __future__ import annotations

from dataclasses import dataclass
import logging
import math
from typing import List
from typing import Optional
from typing import Tuple
import zlib

import cv2
import numpy as np

from retain_ros.sim.tasks import COLOURS
from retain_ros.sim.tasks import GENERALIST_COLOURS
from retain_ros.sim.tasks import get_task
from retain_ros.sim.tasks import Task

LOG = logging.getLogger(__name__)

#: Link lengths (m).
LINKS = np.array([0.42, 0.36, 0.24])
#: Joint names, in state / action order.
JOINT_NAMES = ['shoulder_joint', 'elbow_joint', 'wrist_joint']
LOWER_LIMITS = np.array([-2.4, -2.8, -2.8])
UPPER_LIMITS = np.array([2.4, 2.8, 2.8])
#: Joint positions at the start of an episode (before the per-episode jitter).
HOME = np.array([0.0, 2.6, -1.0])
#: Maximum joint speed (rad/s) of the simulated controller.
MAX_VELOCITY = 1.6
#: Gripper-to-block-centre distance (m) that counts as "on the block" (the block's half size
#: plus a gripper radius).
SUCCESS_RADIUS = 0.15
#: Time (s) the gripper must stay on the block for success.
HOLD_TIME = 0.3
#: Half size of a block (m): 0.24 m blocks are about 4 x 6 pixels of a 32 px model image
#: (0.16 m blocks were 2.6 x 4, with a 1.8 px success radius across).
BLOCK_HALF = 0.12
#: Block placement: distance from the base and angle from the +y axis (positive toward -x).
RADIUS_RANGE = (0.45, 0.95)
ANGLE_RANGE = (-1.1, 1.1)
MIN_SEPARATION = 0.36
#: The narrow finetuning setting of the new task (new_id): one band in front of the arm, the
#: target on one side and the distractor on the other, the sides drawn at random per scene. The
#: demonstrations then tell the blocks apart by colour only: with the target always on one side
#: the finetune learned a place ("go left") and no colour.
NARROW_TARGET = ((0.6, 0.75), (0.2, 0.5))
NARROW_DISTRACTOR = ((0.6, 0.75), (-0.5, -0.2))
#: |angle| range excluded from target placement in new_ood (both sides of the narrow band,
#: with a margin).
OOD_EXCLUDED_ANGLES = (0.05, 0.65)
DEFAULT_TABLE = (196, 184, 160)
#: Splits drawn from the narrow setting, and the OOD splits (broad, minus the narrow region).
NARROW_SPLITS = ('new_id', 'second_id')
OOD_SPLITS = ('new_ood', 'second_ood')
#: Visible part of the table: x in [-1, 1], y in [-0.1, 1.1].
VIEW_X = (-1.0, 1.0)
VIEW_Y = (-0.1, 1.1)


@dataclass(frozen=True)
class SceneInfo:
    """What :meth:`SimWorld.reset` set up.

    :param task: task name (a key of :data:`retain_ros.sim.tasks.TASKS`).
    :param instruction: the language instruction.
    :param split: ``generalist``, ``new_id`` or ``new_ood``.
    :param variation_tag: scene variation, ``pos:narrow,bg:default,light:1.00,distractors:1``
        (no ``;`` or ``=``, so it nests in episode tags).
    :param seed: the seed the scene was drawn from.
    """

    task: str
    instruction: str
    split: str
    variation_tag: str
    seed: int


@dataclass(frozen=True)
class Block:
    """A block on the table: colour name and centre (m)."""

    colour: str
    x: float
    y: float


def forward_kinematics(q: np.ndarray) -> np.ndarray:
    """Positions of the base, the two inner joints and the gripper.

    :param q: joint positions ``(3,)``.
    :return: ``(4, 2)`` array of ``(x, y)`` points.
    """
    points = np.zeros((4, 2))
    heading = 0.0
    for i in range(3):
        heading += float(q[i])
        points[i + 1] = points[i] + LINKS[i] * np.array([-math.sin(heading), math.cos(heading)])
    return points


def end_effector(q: np.ndarray) -> np.ndarray:
    """Gripper position ``(x, y)`` for joint positions ``q``."""
    return forward_kinematics(q)[-1]


def jacobian(q: np.ndarray) -> np.ndarray:
    """Linear Jacobian of the gripper position: ``d end_effector(q) / dq``.

    With the headings ``h_k = q_0 + ... + q_k`` the gripper is at
    ``sum_k LINKS[k] * (-sin h_k, cos h_k)``, so joint ``j`` moves it by
    ``sum_{k >= j} LINKS[k] * (-cos h_k, -sin h_k)`` per radian.

    :param q: joint positions ``(3,)``.
    :return: ``(2, 3)`` array; column ``j`` is the gripper's ``(dx, dy)`` per radian of joint
        ``j``.
    """
    headings = np.cumsum(np.asarray(q, dtype=np.float64).reshape(-1)[:len(LINKS)])
    terms = LINKS[None, :] * np.stack([-np.cos(headings), -np.sin(headings)])
    # column j sums the links from j outwards
    return np.cumsum(terms[:, ::-1], axis=1)[:, ::-1]


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


def inverse_kinematics(target: np.ndarray) -> np.ndarray:
    """Joint positions that put the gripper on ``target``, approaching radially (elbow left).

    The last link points away from the base, so one target has one solution; unreachable targets
    are projected onto the reachable annulus.

    :param target: ``(x, y)`` in metres.
    :return: joint positions ``(3,)``, clipped to the limits.
    """
    x, y = float(target[0]), float(target[1])
    heading = math.atan2(-x, y)
    radius = math.hypot(x, y)
    l1, l2, l3 = (float(v) for v in LINKS)
    wrist = min(max(radius - l3, abs(l1 - l2) + 1e-3), l1 + l2 - 1e-3)
    cos_elbow = (wrist ** 2 - l1 ** 2 - l2 ** 2) / (2.0 * l1 * l2)
    elbow = math.acos(min(1.0, max(-1.0, cos_elbow)))
    offset = math.atan2(l2 * math.sin(elbow), l1 + l2 * math.cos(elbow))
    q0 = _wrap(heading - offset)
    q2 = _wrap(offset - elbow)
    return np.clip(np.array([q0, elbow, q2]), LOWER_LIMITS, UPPER_LIMITS)


def _seed_rng(task: str, split: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(task.encode()),
                                  zlib.crc32(split.encode())])


def _polar(radius: float, angle: float) -> Tuple[float, float]:
    return -radius * math.sin(angle), radius * math.cos(angle)


class SimWorld:
    """The simulated arm, table, blocks and camera.

    :param image_size: side of the square camera image in pixels.
    """

    joint_names: List[str] = list(JOINT_NAMES)
    lower_limits: np.ndarray = LOWER_LIMITS.copy()
    upper_limits: np.ndarray = UPPER_LIMITS.copy()
    max_velocity: float = MAX_VELOCITY

    def __init__(self, image_size: int = 96):
        if int(image_size) < 16:
            raise ValueError(f'image_size must be at least 16 pixels, got {image_size}')
        self.image_size = int(image_size)
        self.joint_names = list(JOINT_NAMES)
        self.lower_limits = LOWER_LIMITS.copy()
        self.upper_limits = UPPER_LIMITS.copy()
        self._q = HOME.copy()
        self._target = HOME.copy()
        self._time = 0.0
        self._hold = 0.0
        self._success = False
        self._blocks: List[Block] = []
        self._narrow_sides = (NARROW_TARGET, NARROW_DISTRACTOR)
        self._task: Optional[Task] = None
        self._info: Optional[SceneInfo] = None
        self._table = np.zeros((self.image_size, self.image_size, 3), np.uint8)
        self._light = np.ones((self.image_size, self.image_size, 3), np.float32)
        self.reset('reach_red', 'generalist', 0)

    # ------------------------------------------------------------------ scene
    def reset(self, task: str, split: Optional[str] = None, seed: int = 0) -> SceneInfo:
        """Draw a new scene for ``task`` from the distribution of ``split``.

        :param task: task name or its instruction text.
        :param split: ``generalist``, ``new_id`` or ``new_ood``; default: the task's first split.
        :param seed: scene seed; the same (task, split, seed) always gives the same scene.
        :return: the :class:`SceneInfo`.
        :raises ValueError: for an unknown task or a split the task does not belong to.
        """
        spec = get_task(task)
        split = split or spec.splits()[0]
        if split not in spec.splits():
            raise ValueError(f'task {spec.name!r} has splits {list(spec.splits())}, '
                             f'not {split!r}')
        rng = _seed_rng(spec.name, split, seed)
        narrow = split in NARROW_SPLITS
        target = self._place_target(rng, split)
        blocks = [Block(spec.colour, *target)]
        others = [c for c in GENERALIST_COLOURS if c != spec.colour]
        n_distractors = 1 if narrow else int(rng.integers(1, 4))
        colours = rng.permutation(others)[:n_distractors]
        for colour in colours:
            blocks.append(Block(str(colour), *self._place_distractor(rng, blocks, narrow)))
        if narrow:
            table, brightness, gradient, tint = DEFAULT_TABLE, 1.0, np.zeros(2), np.ones(3)
        else:
            hsv = np.array([[[rng.uniform(0, 180), rng.uniform(10, 110),
                              rng.uniform(110, 235)]]], np.uint8)
            table = tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])
            brightness = float(rng.uniform(0.75, 1.25))
            gradient = rng.uniform(-0.25, 0.25, size=2)
            tint = rng.uniform(0.92, 1.08, size=3)
        self._q = np.clip(HOME + rng.uniform(-0.1, 0.1, size=3), LOWER_LIMITS, UPPER_LIMITS)
        self._target = self._q.copy()
        self._time = 0.0
        self._hold = 0.0
        self._success = False
        self._blocks = blocks
        self._task = spec
        self._table = self._draw_table(table, blocks)
        self._light = self._lighting(brightness, gradient, tint)
        tag = (f'pos:{"narrow" if narrow else "broad"},'
               f'bg:{"default" if narrow else "random"},'
               f'light:{brightness:.2f},distractors:{n_distractors}')
        self._info = SceneInfo(spec.name, spec.instruction, split, tag, int(seed))
        return self._info

    def place_arm(self, q) -> None:
        """Put the arm at rest at joint positions ``q`` (clipped to the limits), keeping the scene.

        Demonstrations start from varied poses with it.

        :raises ValueError: for a wrong length or non-finite values.
        """
        self.set_joint_targets(q)
        self._q = self._target.copy()
        self._hold = 0.0
        self._success = False

    def retarget(self, task: str) -> SceneInfo:
        """Make another block of the current scene the target, keeping everything else.

        Used for training data: the same scene (same image before the arm moves) demonstrated
        with several instructions, so the image alone does not tell which block to reach.

        :param task: a task (name or instruction) whose colour is a block of the scene.
        :return: the new :class:`SceneInfo` (same split, variation and seed).
        :raises ValueError: no block of that task's colour in the scene.
        """
        spec = get_task(task)
        match = [b for b in self._blocks if b.colour == spec.colour]
        if not match:
            raise ValueError(f'no {spec.colour} block in the scene (blocks: '
                             f'{[b.colour for b in self._blocks]})')
        self._blocks = match + [b for b in self._blocks if b.colour != spec.colour]
        self._task = spec
        self._hold = 0.0
        self._success = False
        info = self._info
        self._info = SceneInfo(spec.name, spec.instruction, info.split, info.variation_tag,
                               info.seed)
        return self._info

    def _place_target(self, rng: np.random.Generator, split: str) -> Tuple[float, float]:
        if split in NARROW_SPLITS:
            # which side of the band gets the target (the distractor takes the other)
            self._narrow_sides = (NARROW_TARGET, NARROW_DISTRACTOR) if rng.random() < 0.5 \
                else (NARROW_DISTRACTOR, NARROW_TARGET)
            (r0, r1), (a0, a1) = self._narrow_sides[0]
            return _polar(rng.uniform(r0, r1), rng.uniform(a0, a1))
        while True:
            radius = rng.uniform(*RADIUS_RANGE)
            angle = rng.uniform(*ANGLE_RANGE)
            if split in OOD_SPLITS and \
                    OOD_EXCLUDED_ANGLES[0] <= abs(angle) <= OOD_EXCLUDED_ANGLES[1]:
                continue
            return _polar(radius, angle)

    def _place_distractor(self, rng: np.random.Generator, blocks: List[Block],
                          narrow: bool) -> Tuple[float, float]:
        for _ in range(1000):
            if narrow:
                (r0, r1), (a0, a1) = self._narrow_sides[1]
            else:
                (r0, r1), (a0, a1) = RADIUS_RANGE, ANGLE_RANGE
            x, y = _polar(rng.uniform(r0, r1), rng.uniform(a0, a1))
            if all(math.hypot(x - b.x, y - b.y) >= MIN_SEPARATION for b in blocks):
                return x, y
        raise RuntimeError('could not place a distractor block')  # pragma: no cover

    # ------------------------------------------------------------- rendering
    def _pixel(self, x: float, y: float) -> Tuple[int, int]:
        s = self.image_size
        u = (x - VIEW_X[0]) / (VIEW_X[1] - VIEW_X[0]) * s
        v = (VIEW_Y[1] - y) / (VIEW_Y[1] - VIEW_Y[0]) * s
        return int(round(u)), int(round(v))

    def _draw_table(self, table: Tuple[int, int, int], blocks: List[Block]) -> np.ndarray:
        s = self.image_size
        image = np.empty((s, s, 3), np.uint8)
        image[:] = table
        base = self._pixel(0.0, 0.0)
        cv2.circle(image, base, max(2, s // 16), (90, 90, 90), -1, cv2.LINE_AA)
        for block in blocks:
            p0 = self._pixel(block.x - BLOCK_HALF, block.y + BLOCK_HALF)
            p1 = self._pixel(block.x + BLOCK_HALF, block.y - BLOCK_HALF)
            cv2.rectangle(image, p0, p1, COLOURS[block.colour], -1)
            cv2.rectangle(image, p0, p1, (40, 40, 40), 1)
        return image

    def _lighting(self, brightness: float, gradient: np.ndarray, tint: np.ndarray) -> np.ndarray:
        s = self.image_size
        ramp = np.linspace(-1.0, 1.0, s, dtype=np.float32)
        field = brightness + gradient[0] * ramp[None, :] + gradient[1] * ramp[:, None]
        return (field[:, :, None] * tint[None, None, :].astype(np.float32)).astype(np.float32)

    def render(self) -> np.ndarray:
        """Camera image of the current state.

        :return: ``(image_size, image_size, 3)`` ``uint8`` RGB.
        """
        image = self._table.copy()
        points = [self._pixel(float(x), float(y)) for x, y in forward_kinematics(self._q)]
        width = max(2, self.image_size // 32)
        for a, b in zip(points[:-1], points[1:]):
            cv2.line(image, a, b, (55, 55, 60), width, cv2.LINE_AA)
        for p in points[1:-1]:
            cv2.circle(image, p, width, (20, 20, 20), -1, cv2.LINE_AA)
        radius = max(2, self.image_size // 28)
        cv2.circle(image, points[-1], radius, (250, 250, 250), -1, cv2.LINE_AA)
        cv2.circle(image, points[-1], radius, (0, 0, 0), 1, cv2.LINE_AA)
        lit = image.astype(np.float32) * self._light
        return np.clip(lit, 0.0, 255.0).astype(np.uint8)

    # ------------------------------------------------------------- dynamics
    def joint_positions(self) -> np.ndarray:
        """Return the current joint positions (copy), in :attr:`joint_names` order."""
        return self._q.copy()

    def joint_targets(self) -> np.ndarray:
        """Return the current joint targets (copy)."""
        return self._target.copy()

    def set_joint_targets(self, q) -> None:
        """Command new joint targets; they are clipped to the joint limits.

        :param q: ``(3,)`` joint targets in :attr:`joint_names` order.
        :raises ValueError: for a wrong length or non-finite values.
        """
        q = np.asarray(q, dtype=np.float64).reshape(-1)
        if q.shape != (len(JOINT_NAMES),):
            raise ValueError(f'expected {len(JOINT_NAMES)} joint targets, got {q.shape[0]}')
        if not np.all(np.isfinite(q)):
            raise ValueError(f'joint targets must be finite, got {q.tolist()}')
        self._target = np.clip(q, self.lower_limits, self.upper_limits)

    def step(self, dt: float) -> None:
        """Advance time by ``dt`` seconds, then update the success hold timer.

        Every joint moves toward its target, at most :data:`MAX_VELOCITY` * ``dt``.

        :param dt: seconds (>= 0).
        """
        dt = float(dt)
        if dt < 0.0 or not math.isfinite(dt):
            raise ValueError(f'dt must be a finite non-negative number, got {dt}')
        limit = self.max_velocity * dt
        self._q = self._q + np.clip(self._target - self._q, -limit, limit)
        self._time += dt
        if self.on_target():
            self._hold += dt
        else:
            self._hold = 0.0
        if self._hold >= HOLD_TIME - 1e-9:
            self._success = True

    # ---------------------------------------------------------------- queries
    @property
    def instruction(self) -> str:
        """Language instruction of the current task."""
        return self._task.instruction

    @property
    def info(self) -> SceneInfo:
        """The :class:`SceneInfo` of the current scene."""
        return self._info

    @property
    def task(self) -> Task:
        """The current :class:`~retain_ros.sim.tasks.Task`."""
        return self._task

    @property
    def time(self) -> float:
        """Seconds since :meth:`reset`."""
        return self._time

    @property
    def blocks(self) -> List[Block]:
        """Blocks on the table; the first is the task's target."""
        return list(self._blocks)

    def target_position(self) -> np.ndarray:
        """Centre ``(x, y)`` of the task's target block."""
        block = self._blocks[0]
        return np.array([block.x, block.y])

    def end_effector(self) -> np.ndarray:
        """Return the current gripper position ``(x, y)``."""
        return end_effector(self._q)

    def on_target(self) -> bool:
        """Whether the gripper is on the target block right now."""
        distance = float(np.linalg.norm(self.end_effector() - self.target_position()))
        return distance <= SUCCESS_RADIUS

    def success(self) -> bool:
        """Whether the task succeeded.

        The gripper stayed on the target block for :data:`HOLD_TIME` seconds (latched until the
        next :meth:`reset`).
        """
        return self._success
