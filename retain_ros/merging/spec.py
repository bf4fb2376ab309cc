"""What to merge: :class:`MergeSpec`, the one type of a merge setting, and its one parser.

Alpha convention: ``theta = (1 - alpha) * theta_pre + alpha * theta_ft`` (alpha = weight on the
finetuned model: 0 = pretrained, 1 = finetuned).

A setting is written in one of these forms, all read by :meth:`MergeSpec.parse`:

- a number, or its text (``0.5``, ``'0.5'``): a uniform merge, every group at that alpha;
- text ``'alpha=1,language=0.8'`` or a dict ``{'alpha': 1, 'language': 0.8}``: per-group
  overrides (keys ``alpha``, ``vision``, ``language``, ``action``, or the node's parameter names
  ``alpha_vision``...); groups not named follow ``alpha``.

**A missing alpha is** :data:`DEFAULT_ALPHA` **= 1.0, the finetuned model**, in every form:
``'language=0.8'`` puts every other group at 1.0 (RETAIN's "merge only the language model"), and
``MergeSpec()`` is the finetuned model. The node's ``alpha`` parameter is never missing (it is
declared with its own starting value, 0.5).

The node's parameters are the same setting under other names (:meth:`MergeSpec.from_params`,
:meth:`MergeSpec.to_params`): ``alpha``, ``alpha_vision``, ``alpha_language``, ``alpha_action``,
a group at :data:`FOLLOW` (-1) following ``alpha``.
"""
from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
import math
from typing import Any
from typing import Dict
from typing import List
from typing import Mapping
from typing import Optional
from typing import Tuple

from retain_ros.merging.errors import SpecError
from retain_ros.merging.recipes.registry import check_name
from retain_ros.merging.recipes.registry import names as recipe_names

GROUPS: Tuple[str, ...] = ('vision', 'language', 'action', 'other')
#: recipe names, from the recipe registry (:mod:`retain_ros.merging.recipes.registry`)
RECIPES: Tuple[str, ...] = tuple(recipe_names())
#: alpha of a setting that does not name it: the finetuned model
DEFAULT_ALPHA = 1.0
#: node parameter value of a group that follows ``alpha``
FOLLOW = -1.0
#: group -> node parameter (the groups a setting may name; ``other`` always follows alpha)
PARAM_OF_GROUP: Dict[str, str] = {
    'vision': 'alpha_vision',
    'language': 'alpha_language',
    'action': 'alpha_action',
}
#: the node's alpha parameters, in order
ALPHA_PARAMS: Tuple[str, ...] = ('alpha',) + tuple(PARAM_OF_GROUP.values())
#: keys a written setting may use (``alpha_<group>`` is read as ``<group>``)
SETTING_KEYS: Tuple[str, ...] = ('alpha',) + tuple(PARAM_OF_GROUP)


@dataclass(frozen=True)
class MergeSpec:
    """A validated merge request.

    :param recipe: one of :data:`RECIPES`.
    :param alpha: weight on the finetuned model (interpolate / sequential), or the single lambda
        for task arithmetic / capability vectors when ``lambdas`` is empty.
    :param group_alpha: per-group override, ``{'vision': 1.0, 'language': 0.8}``; groups not named
        (or named with ``None``, dropped here) follow ``alpha``. Applies to every recipe: the
        coefficient of a tensor is the one of its group.
    :param lambdas: task arithmetic only: one lambda per finetuned checkpoint (default: alpha).
    :param allow_extrapolation: permit coefficients outside [0, 1].
    """

    recipe: str = 'interpolate'
    alpha: float = DEFAULT_ALPHA
    group_alpha: Dict[str, Optional[float]] = field(default_factory=dict)
    lambdas: Tuple[float, ...] = ()
    allow_extrapolation: bool = False

    def __post_init__(self):
        check_name(self.recipe)
        unknown = sorted(set(self.group_alpha) - set(GROUPS))
        if unknown:
            raise SpecError(f'unknown parameter group(s) {unknown}; groups are {list(GROUPS)}')
        object.__setattr__(self, 'group_alpha',
                           {g: v for g, v in self.group_alpha.items() if v is not None})
        self._check('alpha', self.alpha)
        for group, value in self.group_alpha.items():
            self._check(f'alpha_{group}', value)
        for i, value in enumerate(self.lambdas):
            self._check(f'lambda[{i}]', value)

    def _check(self, name: str, value: float) -> None:
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SpecError(f'{name} must be a finite number, got {value!r}')
        if not self.allow_extrapolation and not 0.0 <= value <= 1.0:
            raise SpecError(
                f'{name}={value} is outside [0, 1] (alpha is the weight on the FINETUNED model: '
                '0 = pretrained, 1 = finetuned); pass allow_extrapolation to go beyond')

    # -- reading and writing the setting forms ---------------------------------------------------
    @classmethod
    def parse(cls, setting: Any, recipe: str = 'interpolate',
              allow_extrapolation: bool = False) -> 'MergeSpec':
        """Read one setting in any of its written forms (see the module docstring).

        :param setting: a :class:`MergeSpec` (returned as is), a number, text such as ``'0.5'``
            or ``'alpha=1,language=0.8'``, or a dict with the same keys.
        :param recipe: the recipe of the result.
        :param allow_extrapolation: permit alphas outside [0, 1].
        :return: the spec; groups the setting does not name follow ``alpha``, and an alpha it
            does not name is :data:`DEFAULT_ALPHA`.
        :raises SpecError: naming the setting: empty, not key=value, an unknown or repeated key,
            a value that is not a number or is outside [0, 1].
        """
        if isinstance(setting, MergeSpec):
            return setting
        where = f'setting {setting!r}'
        values: Dict[str, float] = {}
        for key, text in _items(setting, where):
            key = key.strip().lower()
            if key.startswith('alpha_'):
                key = key[len('alpha_'):]
            if key not in SETTING_KEYS:
                raise SpecError(f'{where}: unknown key {key!r}; use {", ".join(SETTING_KEYS)}')
            if key in values:
                raise SpecError(f'{where}: {key!r} given twice')
            try:
                values[key] = float(text)
            except ValueError:
                raise SpecError(f'{where}: {text!r} is not a number') from None
        if not values:
            raise SpecError(f'{where}: no alpha given')
        alpha = values.pop('alpha', DEFAULT_ALPHA)
        try:
            return cls(recipe=recipe, alpha=alpha, group_alpha=values,
                       allow_extrapolation=allow_extrapolation)
        except SpecError as exc:
            raise SpecError(f'{where}: {exc}') from None

    @classmethod
    def from_params(cls, params: Mapping[str, Any], recipe: str = 'interpolate') -> 'MergeSpec':
        """Read the setting of the node's alpha parameters (:data:`ALPHA_PARAMS`).

        :param params: parameter values; a group at :data:`FOLLOW` (-1) or absent follows
            ``alpha``, an absent ``alpha`` is :data:`DEFAULT_ALPHA`.
        :param recipe: the node's ``recipe`` parameter.
        :raises SpecError: naming the parameter whose value is invalid.
        """
        alpha = float(params.get('alpha', DEFAULT_ALPHA))
        groups = {}
        for group, name in PARAM_OF_GROUP.items():
            value = params.get(name, FOLLOW)
            groups[group] = None if float(value) == FOLLOW else float(value)
        return cls(recipe=recipe, alpha=alpha, group_alpha=groups)

    def to_params(self) -> Dict[str, float]:
        """Return the node's alpha parameters (:data:`FOLLOW` for groups that follow alpha).

        :raises SpecError: the setting overrides a group that has no node parameter (``other``).
        """
        extra = sorted(set(self.group_alpha) - set(PARAM_OF_GROUP))
        if extra:
            raise SpecError(f'group(s) {extra} have no node parameter; only '
                            f'{", ".join(PARAM_OF_GROUP)} can differ from alpha')
        params = {'alpha': float(self.alpha)}
        for group, name in PARAM_OF_GROUP.items():
            value = self.group_alpha.get(group)
            params[name] = FOLLOW if value is None else float(value)
        return params

    def to_text(self) -> str:
        """Canonical short text, read back by :meth:`parse`.

        ``'alpha=0.5'`` or ``'alpha=1,language=0.8'``: groups whose alpha equals ``alpha`` are
        left out, so two settings that are the same merge have the same text.
        """
        parts: List[str] = [f'alpha={float(self.alpha):g}']
        for group in GROUPS:
            value = self.group_alpha.get(group)
            if value is not None and float(value) != float(self.alpha):
                parts.append(f'{group}={float(value):g}')
        return ','.join(parts)

    # -- coefficients -----------------------------------------------------------------------------
    def alpha_for(self, group: str) -> float:
        """Coefficient used for tensors of ``group``."""
        value = self.group_alpha.get(group)
        return self.alpha if value is None else float(value)

    def alphas(self) -> Dict[str, float]:
        """Effective coefficient of every group."""
        return {g: self.alpha_for(g) for g in GROUPS}

    def with_alpha(self, alpha: Optional[float] = None, **group_alpha) -> 'MergeSpec':
        """Copy with a new alpha and/or per-group overrides (``vision=0.9``, ``language=None``)."""
        merged = dict(self.group_alpha)
        merged.update(group_alpha)
        return replace(self, alpha=self.alpha if alpha is None else alpha, group_alpha=merged)

    def describe(self) -> str:
        """One line for logs, naming the convention."""
        per = ', '.join(f'{g}={a:g}' for g, a in self.alphas().items())
        return f'recipe={self.recipe} alpha(weight on finetuned)={self.alpha:g} [{per}]'


def _items(setting: Any, where: str) -> List[Tuple[str, str]]:
    """``[(key, value text), ...]`` of a number, a text or a dict setting.

    :raises SpecError: a boolean, an empty text, a part that is not key=value, another type.
    """
    if isinstance(setting, bool):
        raise SpecError(f'setting {setting!r} is not an alpha')
    if isinstance(setting, (int, float)):
        return [('alpha', repr(float(setting)))]
    if isinstance(setting, Mapping):
        return [(str(k), str(v)) for k, v in setting.items()]
    if not isinstance(setting, str):
        raise SpecError(f'setting must be a string, number or dict, got {setting!r}')
    text = setting.strip()
    if not text:
        raise SpecError('empty alpha setting')
    if '=' not in text:
        return [('alpha', text)]
    items = []
    for part in text.split(','):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition('=')
        if not sep:
            raise SpecError(f'{where}: {part!r} is not key=value')
        items.append((key, value.strip()))
    return items
