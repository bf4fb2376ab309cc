"""The conditioning probe: shuffled-input losses show which inputs a policy acts on."""
from __future__ import annotations

import pytest

from retain_ros.demo import cli
from retain_ros.demo.data import generate_demos
from retain_ros.demo.probe import conditioning_probe
from retain_ros.demo.settings import quick_settings
from retain_ros.demo.settings import TrainSettings
from retain_ros.demo.trainer import train_model
from retain_ros.demo.validation import VALIDATION_SEED_OFFSET


@pytest.mark.slow
def test_conditioning_probe_sees_what_the_policy_uses(tmp_path, capsys, fresh_policy):
    """A policy trained on a few scenes uses its inputs (memorised).

    The quick-trained one barely changes. The CLI prints one line per checkpoint.
    """
    from retain_ros.policies.pi0 import save_pi0_checkpoint
    from retain_ros.sim.tasks import GENERALIST_TASKS

    data = generate_demos(GENERALIST_TASKS, 'generalist', 6, horizon=10, dt=0.1,
                          steps=30, all_targets=True, start_spread=1.0, samples_per_demo=1,
                          motion_only=True, seed_offset=VALIDATION_SEED_OFFSET)
    policy, dataset = fresh_policy(quick_settings(), data)
    train_model(policy.module, dataset, 300, 3e-3, 16, 0, 'memorise', False)
    save_pi0_checkpoint(policy, str(tmp_path / 'ckpt'), policy.processor.stats)
    # the default settings' 30-step demonstrations, as the data above
    probe = conditioning_probe(str(tmp_path / 'ckpt'), TrainSettings(), scenes_per_task=6)
    assert set(probe) == {'samples', 'loss', 'shuffled_instruction', 'shuffled_image',
                          'shuffled_state'}
    assert probe['samples'] == len(dataset)
    # the probe runs on the same (validation) scenes it memorised: every input matters
    assert probe['shuffled_state'] > 1.5 * probe['loss']
    assert max(probe['shuffled_image'], probe['shuffled_instruction']) > 1.2 * probe['loss']
    assert cli.main(['--quick', '--probe', str(tmp_path / 'ckpt'), '--no-progress']) == 0
    assert 'instruction shuffled x' in capsys.readouterr().out
