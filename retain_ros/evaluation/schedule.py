"""Alpha schedule for evaluation rollouts: which merge to run next, in a fair random order.

Settings are written the way people say them and read by
:meth:`retain_ros.merging.spec.MergeSpec.parse`:

- ``'0.5'`` (or ``'alpha=0.5'``): a uniform merge, every group at alpha = 0.5;
- ``'alpha=1,language=0.8'``: per-group override; groups not named follow ``alpha``;
- ``'language=0.8'``: groups named without ``alpha`` put every other group at 1.0 (the
  finetuned model), i.e. RETAIN's "merge only the language model".

Alpha is the weight on the FINETUNED model: 0 = pretrained, 1 = finetuned. Each setting becomes
the policy node's parameters ``alpha``, ``alpha_vision``, ``alpha_language``, ``alpha_action``
(-1 = follow ``alpha``).

The order is shuffled in blocks: every block holds each setting once, so after any number of
blocks all settings have run equally often and slow drifts (battery, lighting, wear) hit them
alike. The same seed gives the same order. ``blind=True`` hides the setting from the operator:
:meth:`AlphaSchedule.label` then returns an opaque code.
"""
from __future__ import annotations

import logging
import random
from typing import Dict
from typing import Iterator
from typing import List
from typing import Sequence
from typing import Union

from retain_ros.merging.errors import SpecError
from retain_ros.merging.spec import MergeSpec

LOG = logging.getLogger(__name__)


class ScheduleError(SpecError):
    """A setting string or schedule argument that cannot be used."""


def parse_setting(setting: Union[str, float, Dict[str, float]]) -> Dict[str, float]:
    """Turn one setting into node parameters (:meth:`MergeSpec.parse`, then ``to_params``).

    :param setting: ``'0.5'``, ``'alpha=1,language=0.8'``, a number, or a dict with keys
        ``alpha`` / ``vision`` / ``language`` / ``action`` (or the ``alpha_*`` parameter names).
    :return: ``{'alpha': a, 'alpha_vision': v, 'alpha_language': l, 'alpha_action': x}`` with
        -1 for groups that follow ``alpha``.
    :raises ScheduleError: on unknown keys, repeated keys, bad numbers or alpha outside [0, 1].
    """
    try:
        return MergeSpec.parse(setting).to_params()
    except SpecError as exc:
        raise ScheduleError(str(exc)) from None


def effective_alphas(params: Dict[str, float]) -> Dict[str, float]:
    """Per-group alpha the node will use: ``{'vision', 'language', 'action', 'other'}``."""
    return MergeSpec.from_params(params).alphas()


def describe(params: Dict[str, float]) -> str:
    """Canonical short text of a setting: ``'alpha=0.5'`` or ``'alpha=1,language=0.8'``."""
    return MergeSpec.from_params(params).to_text()


def parse_settings(settings: Union[str, Sequence[Union[str, float, Dict[str, float]]]]
                   ) -> List[Dict[str, float]]:
    """Parse several settings (:func:`parse_setting` each); refuse two that are the same merge.

    Their episodes would pool in one report row.

    :param settings: a sequence of settings, or one string of ``;``-separated settings.
    :raises ScheduleError: no setting, a bad one, or the same merge twice.
    """
    if isinstance(settings, (str, bytes)):
        settings = [s for s in str(settings).split(';') if s.strip()]
    if not settings:
        raise ScheduleError('at least one alpha setting is needed')
    parsed: List[Dict[str, float]] = []
    seen = {}
    for setting in settings:
        params = parse_setting(setting)
        key = describe(params)
        if key in seen:
            raise ScheduleError(
                f'settings {seen[key]!r} and {setting!r} are the same merge ({key})')
        seen[key] = setting
        parsed.append(params)
    return parsed


class AlphaSchedule:
    """A seeded, block-shuffled, optionally blind sequence of alpha settings.

    :param settings: setting strings (see :func:`parse_setting`); duplicates (same parameters)
        are rejected.
    :param repeats: how many times each setting runs (number of blocks).
    :param seed: random seed of the order.
    :param blind: hide the setting in :meth:`label` (the log still records the real alpha).
    """

    def __init__(self, settings: Sequence[Union[str, float]], repeats: int = 1, seed: int = 0,
                 blind: bool = False):
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            raise ScheduleError(f'repeats must be a positive integer, got {repeats!r}')
        self.settings: List[Dict[str, float]] = parse_settings(settings)
        self.repeats = repeats
        self.seed = seed
        self.blind = bool(blind)
        self._order = self._make_order()
        self._next = 0
        # blind codes: a seeded permutation, so code numbers do not reveal the input order
        codes = list(range(1, len(self.settings) + 1))
        random.Random(f'{seed}-codes').shuffle(codes)
        self._codes = {describe(p): f'setting {chr(64 + c) if c <= 26 else c}'
                       for p, c in zip(self.settings, codes)}

    def _make_order(self) -> List[int]:
        rng = random.Random(self.seed)
        order: List[int] = []
        count = len(self.settings)
        for _ in range(self.repeats):
            block = list(range(count))
            rng.shuffle(block)
            # never run the same setting twice in a row across a block boundary
            if order and count > 1 and block[0] == order[-1]:
                swap = rng.randrange(1, count)
                block[0], block[swap] = block[swap], block[0]
            order.extend(block)
        return order

    @property
    def order(self) -> List[Dict[str, float]]:
        """The whole sequence of parameter dicts (copies)."""
        return [dict(self.settings[i]) for i in self._order]

    @property
    def total(self) -> int:
        """Number of episodes in the schedule."""
        return len(self._order)

    @property
    def remaining(self) -> int:
        """Settings not yet handed out by :meth:`next`."""
        return len(self._order) - self._next

    def next(self) -> Dict[str, float]:  # noqa: A003 (the contract's name)
        """Hand out the next setting as node parameters ``{param: value}``.

        :raises StopIteration: when the schedule is used up.
        """
        if self._next >= len(self._order):
            raise StopIteration('alpha schedule exhausted')
        params = dict(self.settings[self._order[self._next]])
        self._next += 1
        return params

    def __iter__(self) -> Iterator[Dict[str, float]]:
        while self.remaining:
            yield self.next()

    def __len__(self) -> int:
        return self.total

    def label(self, params: Dict[str, float]) -> str:
        """Return what the operator's console may show for ``params``.

        ``'alpha=0.5'`` normally; an opaque ``'setting C'`` when the schedule is blind.
        """
        text = describe(params)
        if self.blind:
            return self._codes.get(text, 'setting ?')
        return text

    def reset(self) -> None:
        """Start again from the first setting (same order)."""
        self._next = 0
