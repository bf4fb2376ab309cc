"""The test helpers' checkpoint writers (:mod:`tiny_checkpoints`) against real files."""
import os

from helpers.tiny_checkpoints import canonical_to_lerobot
from helpers.tiny_checkpoints import LEROBOT_PI0
from helpers.tiny_checkpoints import tiny_pi0


def test_independent_lerobot_names_match_the_real_fixture():
    """The helper's LeRobot names are exactly those LeRobot wrote for the same model."""
    from safetensors import safe_open
    with safe_open(os.path.join(LEROBOT_PI0, 'model.safetensors'), 'pt') as f:
        real = set(f.keys())
    canonical = tiny_pi0().state_dict().keys()
    assert {canonical_to_lerobot(k) for k in canonical} == real
