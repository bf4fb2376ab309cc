"""The demo's tiny pi0: its spec, its word tokenizer and its normalization statistics."""
from __future__ import annotations

from typing import Dict

from retain_ros.demo.data import DemoData
from retain_ros.demo.rollout import CAMERA
from retain_ros.demo.settings import TrainSettings
from retain_ros.sim.world import JOINT_NAMES

#: The word tokenizer's vocabulary: the words of the sim's instructions and other common
#: instruction words, colours the generalist tasks never train on included (a pretrained
#: tokenizer knows words its robot data never used). Changing it changes every token id.
DEMO_WORDS = (
    'touch', 'reach', 'put', 'place', 'move', 'go', 'push', 'pick', 'point', 'tap', 'the', 'a',
    'an', 'to', 'on', 'onto', 'at', 'of', 'up', 'and', 'block', 'cube', 'box', 'gripper', 'arm',
    'hand', 'red', 'blue', 'green', 'purple', 'yellow', 'orange', 'pink', 'white', 'black',
    'brown', 'grey', 'cyan', 'left', 'right', 'near', 'far', 'please')
#: Image-space location bins per axis (:func:`retain_ros.demo.dataset.location_bins`).
LOCATION_BINS = 16
#: Location tokens (PaliGemma's ``<locNNNN>``, coarser): ``locx<i>`` for column bin ``i``,
#: ``locy<j>`` for row bin ``j``. No objective reads them any more, but they are in the shipped
#: tokenizer's vocabulary, so they stay.
LOCATION_WORDS = tuple(f'locx{i}' for i in range(LOCATION_BINS)) + \
    tuple(f'locy{i}' for i in range(LOCATION_BINS))
#: Text vocabulary size of the word tokenizer (specials + words; ``<image>`` has this id).
WORD_VOCAB_SIZE = 4 + len(DEMO_WORDS) + len(LOCATION_WORDS)


def build_spec(settings: TrainSettings):
    """Return the tiny pi0 spec for the sim robot (3 joints, one camera, word tokenizer)."""
    from retain_ros.policies.pi0.configuration_pi0 import pi0_config_from_dict
    from retain_ros.policies.pi0.configuration_pi0 import tiny_pi0_config

    cfg = tiny_pi0_config(len(JOINT_NAMES), len(JOINT_NAMES), chunk_size=settings.chunk_size,
                          camera_names=(CAMERA,), image_size=settings.model_image_size,
                          num_inference_steps=settings.num_inference_steps,
                          tokenizer_max_length=settings.tokenizer_max_length,
                          control_period=settings.control_period)
    overrides: Dict[str, object] = {'vocab_size': WORD_VOCAB_SIZE}
    if settings.model_layers:
        for tower in ('text', 'dit'):
            overrides[tower] = {'num_hidden_layers': int(settings.model_layers)}
    cfg['model_overrides'] = overrides
    return pi0_config_from_dict(cfg)


def build_tokenizer(work_dir: str):
    """Return the demo's word tokenizer, written to ``work_dir`` and loaded back from there.

    Loaded from disk so that checkpoints copy it into their ``tokenizer/``.
    """
    from retain_ros.policies.pi0.tokenizer_pi0 import build_word_tokenizer
    from retain_ros.policies.pi0.tokenizer_pi0 import load_tokenizer
    from retain_ros.policies.pi0.tokenizer_pi0 import save_tokenizer

    return load_tokenizer(save_tokenizer(build_word_tokenizer(DEMO_WORDS + LOCATION_WORDS),
                                         work_dir))


def compute_stats(data: DemoData, source: str):
    """Return the normalization statistics (:class:`NormStats`) of a data set."""
    from retain_ros.policies.pi0.processor_pi0 import NormStats

    return NormStats.from_data(data.states, data.actions, source=source)
