"""``MergedPolicy``: one policy, its live merger, a lock, a merge generation and a validity flag.

No ROS here. The node talks to the weights only through this object::

    runtime = MergedPolicy(policy, merger)
    chunk, generation = runtime.predict(observation)     # under the model lock
    ...                                                   # safety filter, message build
    with runtime.current(generation) as ok:               # short lock, taken by set_spec too
        if ok:
            publish(chunk)                                # never from older weights

- :meth:`set_spec` re-merges in place (``LiveMerger.apply``) between two predictions and bumps the
  generation before it returns, so a chunk computed with the old weights can no longer pass
  :meth:`current` once the set has returned;
- a merge that failed AND could not restore the previous weights leaves the module half-merged:
  the runtime is then *invalid* (:attr:`valid` False, :attr:`invalid_reason` says why),
  :meth:`predict` refuses, and only a successful :meth:`reload` makes it valid again;
- :meth:`reload` opens the files again and checks them against the model outside the lock
  (``LiveMerger.reopen``: a bad file is refused without stopping inference), then hands them to
  ``LiveMerger.reload``, which reads and swaps them in under the lock;
- :meth:`switch` does the same with other checkpoint files (and optionally a new spec, one
  merge): the new last finetuned checkpoint must have the running model's configuration, and its
  normalization statistics come in with its weights (:mod:`.checkpoint_switch`).
"""
from __future__ import annotations

from contextlib import contextmanager
import gc
import logging
import threading
from typing import Any
from typing import Dict
from typing import Iterator
from typing import Optional
from typing import Sequence
from typing import Tuple

from retain_ros.merging.engine import CONVENTION
from retain_ros.merging.errors import MergeError
from retain_ros.merging.errors import RestoreFailedError
from retain_ros.merging.spec import MergeSpec
from retain_ros.policies.base import ActionChunk
from retain_ros.policies.base import Observation
from retain_ros.policies.loader import warm_up
from retain_ros.runtime.checkpoint_switch import describe_checkpoints
from retain_ros.runtime.checkpoint_switch import install_stats
from retain_ros.runtime.checkpoint_switch import stats_for_switch

LOG = logging.getLogger(__name__)

#: the alpha convention, one string for logs, replies and ``~/merge_state``
ALPHA_CONVENTION = CONVENTION


class RuntimeInvalidError(RuntimeError):
    """The weights are inconsistent (a failed merge could not be undone); reload them."""


def restore_failed(exc: BaseException, merger: Any = None) -> bool:
    """Whether a merge failure left the module's weights inconsistent.

    The merger says so itself: :class:`RestoreFailedError`, or ``LiveMerger.valid`` False. Any
    exception that is not a :class:`MergeError` (the merger did not get to restore) counts as
    inconsistent too.
    """
    if isinstance(exc, RestoreFailedError) or getattr(merger, 'valid', True) is False:
        return True
    return not isinstance(exc, MergeError)


class MergedPolicy:
    """The merged policy the node runs (see the module docstring).

    :param policy: a :class:`~retain_ros.policies.base.Policy` whose module ``merger`` owns.
    :param merger: the :class:`~retain_ros.merging.live.LiveMerger` of ``policy.module``.
    """

    def __init__(self, policy, merger):
        self._policy = policy
        self._merger = merger
        self._model_lock = threading.RLock()   # predict, merge, reload
        self._gen_lock = threading.Lock()      # generation / validity: short, also for publish
        self._generation = 1
        self._invalid: Optional[str] = None

    # ------------------------------------------------------------------ state
    @property
    def policy(self):
        """Return the wrapped policy; predict with :meth:`predict` here, never with its own."""
        return self._policy

    @property
    def merger(self):
        """The live merger."""
        return self._merger

    @property
    def state(self):
        """The live :class:`~retain_ros.merging.live.MergeState`."""
        return self._merger.state

    @property
    def generation(self) -> int:
        """Merge generation: bumped by every weight change (and by an invalidation)."""
        with self._gen_lock:
            return self._generation

    @property
    def valid(self) -> bool:
        """False after a failed restore, until a successful :meth:`reload`."""
        with self._gen_lock:
            return self._invalid is None

    @property
    def invalid_reason(self) -> Optional[str]:
        """Why the runtime is invalid, or None."""
        with self._gen_lock:
            return self._invalid

    def is_current(self, generation: int) -> bool:
        """Whether ``generation`` is the live one and the weights are valid."""
        with self._gen_lock:
            return self._invalid is None and generation == self._generation

    @contextmanager
    def current(self, generation: int) -> Iterator[bool]:
        """Hold the generation lock; yield whether ``generation`` is live and valid.

        Publish or queue a chunk inside this block only when it yields True: a :meth:`set_spec`
        that returned has bumped the generation under this lock, so nothing computed with the
        previous weights gets out afterwards. Keep the block short (no inference in it).
        """
        with self._gen_lock:
            yield self._invalid is None and generation == self._generation

    def _bump(self, invalid: Optional[str] = None) -> int:
        with self._gen_lock:
            self._generation += 1
            self._invalid = invalid
            return self._generation

    # ------------------------------------------------------------------ inference
    def predict(self, observation: Observation, noise: Any = None,
                guidance: Any = None) -> Tuple[ActionChunk, int]:
        """Predict one chunk; return it with the generation of the weights it was computed with.

        :raises RuntimeInvalidError: when the weights are inconsistent.
        """
        with self._model_lock:
            with self._gen_lock:
                if self._invalid is not None:
                    raise RuntimeInvalidError(self._invalid)
                generation = self._generation
            chunk = self._policy.predict(observation, noise=noise, guidance=guidance)
        return chunk, generation

    def reset(self) -> None:
        """Forget episode state of the policy (between episodes)."""
        with self._model_lock:
            self._policy.reset()

    def warm_up(self, instruction: str = 'warm up') -> float:
        """Run one prediction on a blank observation (first-call allocations); return its ms.

        Under the model lock (:func:`retain_ros.policies.loader.warm_up`).
        """
        with self._model_lock:
            ms = warm_up(self._policy, instruction)
            self._policy.reset()
        return ms

    # ------------------------------------------------------------------ weights
    def set_spec(self, spec: MergeSpec):
        """Re-merge with ``spec`` in place, between two predictions; all-or-nothing.

        :return: the new :class:`~retain_ros.merging.live.MergeState`.
        :raises MergeError: the merge failed and the previous weights were restored (still valid).
        :raises RuntimeInvalidError: the merge failed and the restore failed too: the runtime is
            invalid until a successful :meth:`reload`.
        """
        with self._model_lock:
            if self._invalid_now():
                raise RuntimeInvalidError(
                    f'{self.invalid_reason}; reload the weights (~/reload_weights) first')
            try:
                state = self._merger.apply(spec)
            except Exception as exc:  # noqa: B902 - classify every failure
                self._fail(exc)
                raise
            self._policy.reset()
            self._bump()
        return state

    def reload(self):
        """Re-open the checkpoints and re-merge the current spec; all-or-nothing.

        The files are opened and checked against the model once, outside the lock (inference
        goes on; a bad file is refused here), then read and swapped in under the lock. A
        successful reload makes an invalid runtime valid again.

        :return: the new :class:`~retain_ros.merging.live.MergeState`.
        :raises MergeError: files unreadable or not fitting; the previous weights stay (and an
            invalid runtime stays invalid).
        """
        return self._swap(self._reopen(), None, None)

    def switch(self, pretrained: str, finetuned: Sequence[str],
               spec: Optional[MergeSpec] = None):
        """Merge other checkpoints in place of the live ones (and ``spec``, in the same merge).

        Like :meth:`reload`: the files are opened and checked outside the lock (same tensors and
        shapes as the model, the running model's ``config.json``, readable normalization
        statistics), then read and merged in under it, all-or-nothing; the new last finetuned
        checkpoint's statistics are installed with its weights.

        :param pretrained: the pretrained checkpoint path.
        :param finetuned: the finetuned checkpoint paths.
        :param spec: the spec to merge them with (None: the live one).
        :return: the new :class:`~retain_ros.merging.live.MergeState`.
        :raises MergeError: refused or failed; the previous checkpoints, statistics and weights
            stay live (the message says why).
        :raises RuntimeInvalidError: as for :meth:`set_spec`.
        """
        reopened = self._reopen(pretrained, list(finetuned))
        try:
            stats = stats_for_switch(self._policy, self._merger.sources[1][-1], reopened.fts[-1])
        except MergeError:
            raise
        except Exception as exc:  # noqa: B902 - any unreadable file is a refused switch
            raise MergeError(f'switch refused: {type(exc).__name__}: {exc}') from exc
        return self._swap(reopened, spec, stats)

    def _swap(self, reopened, spec: Optional[MergeSpec], stats: Any):
        """Under the model lock: ``LiveMerger.reload`` of ``reopened``, then ``stats``."""
        with self._model_lock:
            was_invalid = self._invalid_now()
            try:
                state = self._merger.reload(reopened, spec)
            except Exception as exc:  # noqa: B902
                if not was_invalid:
                    self._fail(exc)
                raise
            install_stats(self._policy, stats)
            self._policy.reset()
            self._bump()
        if was_invalid:
            LOG.info('weights reloaded: the runtime is valid again')
        return state

    def _reopen(self, pretrained: Optional[str] = None,
                finetuned: Optional[Sequence[str]] = None):
        """``LiveMerger.reopen``: the files opened (again) and checked, without the model lock.

        :raises MergeError: with the reason (names the file).
        """
        try:
            return self._merger.reopen(pretrained, finetuned)
        except MergeError:
            raise
        except Exception as exc:  # noqa: B902 - any unreadable file is a refused reload
            raise MergeError(f'reload refused: {type(exc).__name__}: {exc}') from exc

    def invalidate(self, reason: str) -> None:
        """Mark the weights inconsistent (used when a failure left them so)."""
        LOG.error('merged policy invalid: %s', reason)
        self._bump(invalid=reason)

    def _invalid_now(self) -> bool:
        with self._gen_lock:
            return self._invalid is not None

    def _fail(self, exc: BaseException) -> None:
        if restore_failed(exc, self._merger):
            self.invalidate(f'a failed merge could not restore the previous weights ({exc}); '
                            'the weights are inconsistent')
            raise RuntimeInvalidError(self.invalid_reason) from exc

    # ------------------------------------------------------------------ teardown
    def release(self) -> None:
        """Drop the policy and the merger and free their memory (CUDA cache included)."""
        with self._model_lock:
            self._bump(invalid='released')
            self._policy = None
            self._merger = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover - torch is a dependency
            pass

    def describe(self, blind: bool = False) -> str:
        """One line: recipe, alpha per group (unless ``blind``), fingerprint."""
        state = self.state
        if blind:
            return (f'recipe={state.recipe} alpha hidden (blind evaluation) '
                    f'fingerprint={state.fingerprint}')
        per = ', '.join(f'{g}={a:g}' if isinstance(a, (int, float)) else f'{g}={a}'
                        for g, a in state.alphas.items())
        return (f'recipe={state.recipe} alpha (weight on finetuned) per group: {per}; '
                f'fingerprint={state.fingerprint}')

    def checkpoints(self) -> Dict[str, Any]:
        """Return the live checkpoints: pretrained, finetuned (paths) and their digests."""
        return describe_checkpoints(self._merger)

    def merge_state(self, blind: bool = False) -> Dict[str, Any]:
        """``~/merge_state`` content: alpha per group (hidden when blind), recipe, fingerprint.

        Also the live ``checkpoints`` (:meth:`checkpoints`), the generation and the validity.
        """
        data = dict(self.state.to_dict())
        data['checkpoints'] = self.checkpoints()
        data['generation'] = self.generation
        data['valid'] = self.valid
        if blind:
            data['alpha'] = 'hidden'
            data['blind'] = True
        return data
