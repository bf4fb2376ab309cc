"""The node's ``compile`` parameter on a real rclpy graph: compiled at configure, live α free.

A π0.5 fixture pair (test/data/pi05_ref and a perturbed copy) with ``compile:=default``: the
warm-up at configure compiles, the node publishes chunks, and live α changes (accepted through
the parameter service, visible in the actions) compile nothing. A bad value is refused at
configure with the value named.
"""
import numpy as np
import pytest
import torch

pytest.importorskip('rclpy')

from helpers.family_node import FamilyNode  # noqa: E402
from helpers.family_node import write_pair  # noqa: E402
from retain_ros.policies.compile import compile_counts  # noqa: E402
from retain_ros.ros.policy_node.config import ConfigError  # noqa: E402
from retain_ros.ros.policy_node.config import NodeConfig  # noqa: E402
from retain_ros.ros.policy_node.params import SPECS  # noqa: E402

pytestmark = pytest.mark.ros


def _values(**changes):
    values = {name: spec.default for name, spec in SPECS.items()}
    values.update(changes)
    return values


def test_compile_parameter_is_validated():
    assert NodeConfig.from_values(_values()).compile == 'none'
    assert NodeConfig.from_values(_values(compile='max-autotune')).compile == 'max-autotune'
    with pytest.raises(ConfigError, match="compile='fast'"):
        NodeConfig.from_values(_values(compile='fast'))
    with pytest.raises(ConfigError, match='reduce-overhead.*CUDA'):
        NodeConfig.from_values(_values(compile='reduce-overhead', device='cpu'))
    assert SPECS['compile'].read_only


@pytest.mark.slow
def test_node_compiles_at_configure_and_live_alpha_does_not_recompile(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCHINDUCTOR_CACHE_DIR', str(tmp_path / 'inductor'))
    torch._dynamo.reset()
    pre, ft = write_pair('pi05_ref', tmp_path, tokenizer_dir='tiny_paligemma_tokenizer')
    try:
        with FamilyNode(pre, ft, compile='default') as run:
            assert run.node.policy.compile_mode == 'default'
            assert compile_counts()['unique_graphs'] >= 2   # compiled by the warm-up
            mid = run.chunk_after(2)
            counts = compile_counts()
            run.set_params(alpha=1.0)
            assert run.merge_state(2, timeout=30)['alpha']['action'] == 1.0
            at_one = run.chunk_after(3)
            assert np.all(np.isfinite(at_one))
            assert not np.allclose(mid, at_one), 'alpha change not visible in the actions'
            run.set_params(alpha=0.3)
            run.merge_state(3, timeout=30)
            run.chunk_after(2)
            assert compile_counts() == counts, 'a live alpha change recompiled'
    finally:
        torch._dynamo.reset()
