"""The shipped demo generalist matches the settings that made it (and stays small)."""
from __future__ import annotations

import json
import os

import pytest

from retain_ros.demo import train
from retain_ros.demo.paths import checkpoint_complete

SHIPPED = train.SHIPPED_GENERALIST


@pytest.fixture(scope='module')
def info():
    assert checkpoint_complete(SHIPPED), f'no shipped generalist in {SHIPPED}'
    found = train.read_info(SHIPPED)
    assert found and found['role'] == 'generalist'
    return found


def test_shipped_generalist_was_made_with_the_default_settings(info):
    settings = train.TrainSettings()
    assert info['settings'] == train.generalist_settings(settings)
    assert info['hash'] == train.generalist_digest(settings), \
        'the default settings (or the sim / FORMAT_VERSION) changed since the generalist was ' \
        'shipped: rebuild it with `retain-ros demo-train --stage generalist --out ' \
        'retain_ros/demo/pretrained`'
    assert info['format'] == train.FORMAT_VERSION


def test_shipped_files_are_the_recorded_ones(info):
    assert train.file_sha256(os.path.join(SHIPPED, 'model.safetensors')) == \
        info['weights_sha256']
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(SHIPPED)
                for f in files)
    assert total <= 25 * 2 ** 20
    with open(os.path.join(SHIPPED, 'config.json'), encoding='utf-8') as f:
        config = json.load(f)
    spec = train.build_spec(train.TrainSettings())
    assert config['image_resolution'] == list(spec.image_size)
    assert config['tokenizer_max_length'] == spec.tokenizer_max_length
    assert config.get('model_overrides', {}).get('vocab_size') == train.WORD_VOCAB_SIZE
    with open(os.path.join(SHIPPED, 'tokenizer', 'tokenizer.json'), encoding='utf-8') as f:
        vocab = json.load(f)['model']['vocab']
    assert [w for w, _ in sorted(vocab.items(), key=lambda kv: kv[1])][4:] == \
        list(train.DEMO_WORDS + train.LOCATION_WORDS)
    curve = info['curve']
    assert curve and curve[-1]['step'] == info['settings']['generalist_steps']
    assert os.path.isfile(os.path.join(SHIPPED, 'training_curve.png'))


@pytest.mark.slow
def test_shipped_data_digest_reproduces(info):
    """The demonstrations regenerated from the recorded settings are the ones it trained on."""
    data = train.generalist_data(train.TrainSettings(), progress=False)
    assert train.data_digest(data) == info['data_digest']
    assert len(data) == info['samples']
