"""Tasks of the simulated robot, named in language, and their scene distributions (splits).

Every task asks the arm to bring its gripper (the end effector) onto one coloured block and hold
it there. The *generalist* tasks (red, blue, green, purple) are what the pretrained policy learns,
over a broad scene distribution. The *new* task (the yellow block, same phrasing) is what
the finetune learns from a few demonstrations in a narrow setting (``new_id``); ``new_ood`` keeps
the new task but draws the scene from held-out variations (other block positions, table colours,
lighting, more distractors) -- variations the generalist saw during pretraining but the finetune
never did.
"""
from __future__ import annotations

from dataclasses import dataclass
import logging
from typing import Dict
from typing import List
from typing import Tuple

LOG = logging.getLogger(__name__)

#: Block colours (RGB, before lighting).
COLOURS: Dict[str, Tuple[int, int, int]] = {
    'red': (215, 40, 35),
    'blue': (35, 75, 215),
    'green': (40, 165, 55),
    'purple': (140, 55, 185),
    'yellow': (235, 205, 30),
    'cyan': (40, 200, 215),
}

#: The split names of the demo sweep.
SPLITS: Tuple[str, ...] = ('generalist', 'new_id', 'new_ood')
#: Splits of the SECOND new task (the continual chain: a skill added after the first merge).
CONTINUAL_SPLITS: Tuple[str, ...] = ('second_id', 'second_ood')
#: Every split a scene can be drawn from.
ALL_SPLITS: Tuple[str, ...] = SPLITS + CONTINUAL_SPLITS

#: Colours used for the generalist tasks (also the only distractor colours anywhere).
GENERALIST_COLOURS: Tuple[str, ...] = ('red', 'blue', 'green', 'purple')

#: The colour of the new task's block (never seen in pretraining).
NEW_COLOUR = 'yellow'
#: The colour of the second new task's block (continual chain; never seen before it).
SECOND_COLOUR = 'cyan'


#: The instruction of every task (the generalist's phrasing; only the colour changes).
INSTRUCTION = 'touch the {colour} block'


@dataclass(frozen=True)
class Task:
    """One task: reach the block of ``colour`` and hold the gripper on it.

    :param name: registry key (``reach_red``, ...).
    :param instruction: the language instruction given to the policy.
    :param colour: colour name of the target block (a key of :data:`COLOURS`).
    :param kind: ``'generalist'`` (pretraining task), ``'new'`` (the finetune task) or
        ``'second'`` (the second new task of the continual chain).
    """

    name: str
    instruction: str
    colour: str
    kind: str

    def splits(self) -> Tuple[str, ...]:
        """Return the splits this task can be reset in."""
        if self.kind == 'generalist':
            return ('generalist',)
        if self.kind == 'second':
            return CONTINUAL_SPLITS
        return ('new_id', 'new_ood')


def _build() -> Dict[str, Task]:
    tasks = {}
    # The new tasks use the generalist's own phrasing: only the colour word is new, so what
    # the finetune must learn is the new object (what "yellow" looks like), not a new sentence.
    kinds = [(c, 'generalist') for c in GENERALIST_COLOURS] + \
        [(NEW_COLOUR, 'new'), (SECOND_COLOUR, 'second')]
    for colour, kind in kinds:
        name = f'reach_{colour}'
        tasks[name] = Task(name, INSTRUCTION.format(colour=colour), colour, kind)
    return tasks


#: name -> :class:`Task`.
TASKS: Dict[str, Task] = _build()

#: Pretraining tasks, in a fixed order.
GENERALIST_TASKS: List[str] = [n for n, t in TASKS.items() if t.kind == 'generalist']

#: The new (finetune) task.
NEW_TASK = 'reach_yellow'
#: The second new task (continual chain).
SECOND_TASK = 'reach_cyan'


def tasks_for_split(split: str) -> List[str]:
    """Task names valid in ``split``.

    :param split: one of :data:`SPLITS`.
    :return: task names, in registry order.
    :raises ValueError: for an unknown split.
    """
    if split not in ALL_SPLITS:
        raise ValueError(f'unknown split {split!r}; splits are {list(ALL_SPLITS)}')
    return [n for n, t in TASKS.items() if split in t.splits()]


def get_task(name: str) -> Task:
    """Look a task up by name, or by its exact instruction text.

    :raises ValueError: when neither matches, listing the known tasks.
    """
    if name in TASKS:
        return TASKS[name]
    for task in TASKS.values():
        if task.instruction == name:
            return task
    raise ValueError(f'unknown task {name!r}; tasks are {sorted(TASKS)}')
