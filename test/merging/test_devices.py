"""The one device / dtype rule (retain_ros.merging.devices) and where it is used."""
import pytest
import torch

from retain_ros.merging import devices
from retain_ros.merging.devices import dtype_name
from retain_ros.merging.devices import parse_dtype
from retain_ros.merging.devices import preferred_dtype
from retain_ros.merging.devices import resolve_device
from retain_ros.merging.devices import resolve_dtype

CPU = torch.device('cpu')


def test_device_and_dtype_names():
    assert resolve_device('cpu').type == 'cpu'
    assert resolve_device('auto').type in ('cpu', 'cuda')
    with pytest.raises(ValueError):
        resolve_device('tpu')
    assert resolve_dtype('auto', torch.device('cpu')) == torch.float32
    assert resolve_dtype('bfloat16', torch.device('cpu')) == torch.bfloat16
    with pytest.raises(ValueError):
        resolve_dtype('int8', torch.device('cpu'))


def test_device_names_are_normalized_and_checked():
    assert resolve_device(None) == resolve_device('auto') == resolve_device(' AUTO ')
    assert resolve_device(torch.device('cpu')) == CPU
    for bad in ('mps', 'cuda:x', 'gpu'):
        with pytest.raises(ValueError, match='auto, cpu, cuda or cuda:N'):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='CUDA is not available'):
            resolve_device('cuda:0')
    else:
        with pytest.raises(ValueError, match='CUDA device'):
            resolve_device(f'cuda:{torch.cuda.device_count()}')


def test_dtype_names():
    for name, want in (('float32', torch.float32), ('FP32', torch.float32),
                       ('bf16', torch.bfloat16), (' float16 ', torch.float16),
                       ('fp16', torch.float16)):
        assert parse_dtype(name) == want
        assert resolve_dtype(name, CPU) == want
    for auto in (None, '', 'auto', 'Auto'):
        assert parse_dtype(auto) is None
    assert parse_dtype(torch.float16) == torch.float16
    with pytest.raises(ValueError, match='dtype must be auto, float32, bfloat16 or float16'):
        parse_dtype('float64')
    assert dtype_name(torch.bfloat16) == 'bfloat16'


@pytest.mark.parametrize('native', [True, False])
def test_auto_keeps_the_checkpoint_dtype_and_only_widens(monkeypatch, native):
    monkeypatch.setattr(devices, 'cpu_has_native_bf16', lambda: native)
    preferred = torch.bfloat16 if native else torch.float32
    assert preferred_dtype(CPU) == preferred
    # a float32 checkpoint (or none) is never narrowed
    assert resolve_dtype('auto', CPU) == torch.float32
    assert resolve_dtype('auto', CPU, torch.float32) == torch.float32
    # a bfloat16 checkpoint is widened only where bfloat16 is emulated
    assert resolve_dtype('auto', CPU, torch.bfloat16) == preferred
    # same width: the checkpoint's own
    assert resolve_dtype('auto', CPU, torch.float16) == (torch.float16 if native
                                                         else torch.float32)
    # an explicit dtype is never changed
    assert resolve_dtype('float16', CPU, torch.bfloat16) == torch.float16


def test_cuda_prefers_bfloat16_where_supported(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: True)
    cuda = torch.device('cuda')
    assert preferred_dtype(cuda) == torch.bfloat16
    assert resolve_dtype('auto', cuda, torch.bfloat16) == torch.bfloat16
    assert resolve_dtype('auto', cuda, torch.float32) == torch.float32
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: False)
    assert preferred_dtype(cuda) == torch.float32
    assert resolve_dtype('auto', cuda, torch.bfloat16) == torch.float32
