"""The ``compile`` option: ``torch.compile`` of each family's per-step functions. No ROS here.

Modes (:data:`COMPILE_MODES`): ``none`` (eager, the default), ``default``, ``reduce-overhead``
(CUDA graphs: GPU only) and ``max-autotune``. What is compiled, per family: the prefix pass
(images + text through the VLM, once per chunk) and the velocity step of the action expert
against the cached prefix (``num_inference_steps`` times per chunk). Sampling, the
pre-processing (tokenizer, images) and the unnormalization stay eager.

Live α stays exact and free of recompiles because the merger rewrites every parameter IN PLACE
(same tensor, same storage) and the compiled graphs read parameters as graph inputs at run time:
``torch.compile(..., dynamic=False)`` with inductor's ``freezing`` OFF (freezing folds weights
into the graph as constants, so a merge would be ignored; :func:`compile_fn` refuses to compile
when it is on). Dynamo guards on a parameter's shape, dtype, device and strides, never on its
values, so an α change or a reload triggers no recompilation; a new batch size, camera count or
image size does (one compile per shape; the node's warm-up compiles its own shapes).

:func:`compile_counts` reads torch's counters (graphs compiled, frames traced) so
tests and benchmarks can assert that an α change compiled nothing.
"""
from __future__ import annotations

import logging
from typing import Any
from typing import Callable
from typing import Dict

LOG = logging.getLogger(__name__)

#: values of the ``compile`` option / node parameter
COMPILE_MODES = ('none', 'default', 'reduce-overhead', 'max-autotune')


def check_compile_mode(mode: Any, device: Any = None) -> str:
    """Return ``mode`` checked against :data:`COMPILE_MODES` and the device.

    :param mode: the requested mode (``None`` or ``''`` mean ``none``).
    :param device: the policy's device (``torch.device`` or string); ``None`` = not checked.
    :raises ValueError: an unknown mode, or ``reduce-overhead`` on a device without CUDA
        graphs (the message names the value and what to use instead).
    """
    value = 'none' if mode is None or mode == '' else mode
    if not isinstance(value, str) or value not in COMPILE_MODES:
        raise ValueError(f'compile={mode!r}: use one of {", ".join(COMPILE_MODES)}')
    kind = getattr(device, 'type', None) or (str(device).split(':')[0] if device else None)
    if value == 'reduce-overhead' and kind is not None and kind != 'cuda':
        raise ValueError(f"compile='reduce-overhead' records CUDA graphs and needs a CUDA "
                         f"device, but the policy is on {device}: use compile='default' (or "
                         "'max-autotune') on this device")
    return value


def _clone_tensors(out: Any) -> Any:
    import torch
    from torch.utils._pytree import tree_map

    return tree_map(lambda x: x.clone() if isinstance(x, torch.Tensor) else x, out)


def compile_fn(fn: Callable, mode: str, name: str = '') -> Callable:
    """Return ``fn`` compiled with ``torch.compile(fn, dynamic=False)`` in ``mode``.

    ``mode='none'`` returns ``fn`` itself. With ``reduce-overhead`` each call starts a new
    CUDA-graph step and its outputs are cloned (a replay reuses the graph's output memory).

    :param fn: a function of tensors (parameters are read from modules it closes over).
    :param mode: one of :data:`COMPILE_MODES` (checked).
    :param name: what ``fn`` is, for the log.
    :raises RuntimeError: inductor's ``freezing`` is on (weights would become constants and
        live α changes would be ignored by the compiled code).
    """
    mode = check_compile_mode(mode)
    if mode == 'none':
        return fn
    import torch
    import torch._inductor.config as inductor_config

    if getattr(inductor_config, 'freezing', False):
        raise RuntimeError('torch._inductor.config.freezing is on: it folds the weights into '
                           'the compiled graph as constants, so live alpha changes would be '
                           'ignored. Turn it off (the default) to use compile')
    compiled = torch.compile(fn, dynamic=False, mode=None if mode == 'default' else mode)
    LOG.info('compile=%s: %s will be compiled on its first call', mode, name or fn)
    if mode != 'reduce-overhead':
        return compiled

    def run(*args, **kwargs):
        torch.compiler.cudagraph_mark_step_begin()
        return _clone_tensors(compiled(*args, **kwargs))
    return run


def apply_compile(policy: Any, mode: Any) -> str:
    """Switch ``policy`` to ``mode`` (``policy.set_compile``); return the checked mode.

    :raises ValueError: invalid mode (see :func:`check_compile_mode`), or the policy's family
        cannot be compiled (the message says why).
    """
    mode = check_compile_mode(mode, getattr(policy, 'device', None))
    setter = getattr(policy, 'set_compile', None)
    if setter is None:
        if mode == 'none':
            return mode
        raise ValueError(f'compile={mode!r}: the {getattr(policy, "name", "?")} policy has no '
                         "compiled steps; use compile='none'")
    setter(mode)
    return mode


def compile_counts() -> Dict[str, int]:
    """Return torch's compile counters: graphs compiled and frames traced.

    ``unique_graphs`` counts every graph dynamo produced in this process (until
    ``torch._dynamo.utils.counters.clear()``; ``torch._dynamo.reset()`` keeps them),
    ``frames_ok`` / ``frames_total`` the frames it traced: a recompilation raises both.
    Compare two snapshots to see whether something compiled (or set
    ``torch._dynamo.config.error_on_recompile`` to make one raise).
    """
    from torch._dynamo.utils import counters

    return {'unique_graphs': int(counters['stats']['unique_graphs']),
            'frames_ok': int(counters['frames']['ok']),
            'frames_total': int(counters['frames']['total'])}
