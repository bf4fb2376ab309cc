"""Random weights in the exact layout LeRobot wrote for the tiny π0 fixture."""
import json
import os

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data')
FIXTURE = os.path.join(DATA, 'lerobot_pi0_tiny')


def write_layout_weights(out_dir, seed=0, num_inference_steps=None):
    """Write a model.safetensors with exactly the names, shapes and metadata LeRobot wrote.

    The fixture's config.json goes with it (``num_inference_steps`` overridden when given).
    """
    from safetensors.torch import save_file as save_torch
    import torch

    with open(os.path.join(FIXTURE, 'layout.json'), encoding='utf-8') as f:
        layout = json.load(f)
    gen = torch.Generator().manual_seed(seed)
    tensors = {k: torch.randn(v['shape'], generator=gen) * 0.05
               for k, v in layout['tensors'].items()}
    os.makedirs(out_dir, exist_ok=True)
    save_torch(tensors, os.path.join(out_dir, 'model.safetensors'), metadata=layout['metadata'])
    with open(os.path.join(FIXTURE, 'config.json'), encoding='utf-8') as f:
        cfg = json.load(f)
    if num_inference_steps:
        cfg['num_inference_steps'] = int(num_inference_steps)
    with open(os.path.join(out_dir, 'config.json'), 'w', encoding='utf-8') as f:
        json.dump(cfg, f, indent=4)
    return out_dir
