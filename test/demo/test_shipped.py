"""The shipped demo pretrained model matches the settings that made it (and stays small)."""
from __future__ import annotations

import json
import os

import pytest

from retain_ros.demo.checkpoints import read_info
from retain_ros.demo.dataset import data_digest
from retain_ros.demo.dataset import pretrained_data
from retain_ros.demo.model import build_spec
from retain_ros.demo.model import DEMO_WORDS
from retain_ros.demo.model import LOCATION_WORDS
from retain_ros.demo.model import WORD_VOCAB_SIZE
from retain_ros.demo.paths import checkpoint_complete
from retain_ros.demo.paths import SHIPPED_PRETRAINED
from retain_ros.demo.settings import FORMAT_VERSION
from retain_ros.demo.settings import pretrained_digest
from retain_ros.demo.settings import pretrained_settings
from retain_ros.demo.settings import TrainSettings
from retain_ros.merging.digests import file_sha256

SHIPPED = SHIPPED_PRETRAINED


@pytest.fixture(scope='module')
def info():
    assert checkpoint_complete(SHIPPED), f'no shipped pretrained model in {SHIPPED}'
    found = read_info(SHIPPED)
    assert found and found['role'] == 'generalist'
    return found


def test_shipped_pretrained_model_was_made_with_the_default_settings(info):
    settings = TrainSettings()
    assert info['settings'] == pretrained_settings(settings)
    assert info['hash'] == pretrained_digest(settings), \
        'the default settings (or the sim / FORMAT_VERSION) changed since the pretrained model ' \
        'was shipped: rebuild it with `retain-ros demo-train --stage pretrained --out ' \
        'retain_ros/demo/pretrained`'
    assert info['format'] == FORMAT_VERSION


def test_shipped_files_are_the_recorded_ones(info):
    assert file_sha256(os.path.join(SHIPPED, 'model.safetensors')) == info['weights_sha256']
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(SHIPPED)
                for f in files)
    assert total <= 25 * 2 ** 20
    with open(os.path.join(SHIPPED, 'config.json'), encoding='utf-8') as f:
        config = json.load(f)
    spec = build_spec(TrainSettings())
    assert config['image_resolution'] == list(spec.image_size)
    assert config['tokenizer_max_length'] == spec.tokenizer_max_length
    assert config.get('model_overrides', {}).get('vocab_size') == WORD_VOCAB_SIZE
    with open(os.path.join(SHIPPED, 'tokenizer', 'tokenizer.json'), encoding='utf-8') as f:
        vocab = json.load(f)['model']['vocab']
    assert [w for w, _ in sorted(vocab.items(), key=lambda kv: kv[1])][4:] == \
        list(DEMO_WORDS + LOCATION_WORDS)
    curve = info['curve']
    assert curve and curve[-1]['step'] == info['settings']['generalist_steps']
    assert os.path.isfile(os.path.join(SHIPPED, 'training_curve.png'))


@pytest.mark.slow
def test_shipped_data_digest_reproduces(info):
    """The demonstrations regenerated from the recorded settings are the ones it trained on."""
    data = pretrained_data(TrainSettings(), progress=False)
    assert data_digest(data) == info['data_digest']
    assert len(data) == info['samples']
