"""Camera image preprocessing shared by the families, quirks included. No ROS here.

Input: RGB ``uint8`` ``(H, W, 3)`` arrays. Output: float32 ``(3, h, w)`` tensors for the vision
tower, in [-1, 1] except where a reference implementation pads outside that range.

:func:`resize_with_pad` is openpi's ``resize_with_pad_torch`` as LeRobot 0.4.4 uses it for π0 and
π0.5: ``ratio = max(W / w, H / h)``, new size ``int(H / ratio) x int(W / ratio)``, bilinear
``F.interpolate`` (``align_corners=False``, no antialias), clamp to [-1, 1], then constant padding
centred (the odd pixel at the bottom / right). Two orders of the ``x * 2 - 1`` mapping:

- ``lerobot`` (LeRobot 0.4.4 π0 / π0.5): the [0, 1] image is resized and padded with -1.0, THEN
  mapped, so padded pixels reach the tower as **-3.0** (a LeRobot quirk; checkpoints trained with
  LeRobot saw it, so it is reproduced).
- ``openpi``: the image is mapped to [-1, 1] first, then resized and padded with -1 (black).

Images already at the model size are not resized (both).
"""
from __future__ import annotations

from typing import Dict
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

LEROBOT = 'lerobot'
OPENPI = 'openpi'
PAD_ORDERS = (LEROBOT, OPENPI)


def check_image(name: str, img) -> np.ndarray:
    """Return ``img`` if it is an RGB ``uint8`` ``(H, W, 3)`` array, else raise ``ValueError``."""
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
        raise ValueError(f'camera {name!r}: image must be a uint8 numpy array, got '
                         f'{getattr(img, "dtype", type(img).__name__)}')
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f'camera {name!r}: image must be (H, W, 3) RGB, got shape {img.shape}')
    return img


def camera_images(images: Dict[str, np.ndarray], camera_names: Sequence[str]) -> list:
    """The images of ``camera_names``, in order, checked (extra cameras are ignored)."""
    if not isinstance(images, dict):
        raise ValueError(f'observation images must be a dict camera -> image, '
                         f'got {type(images).__name__}')
    missing = [c for c in camera_names if c not in images]
    if missing:
        raise ValueError(f'missing camera image(s) {missing}; the model expects '
                         f'{list(camera_names)}, got {sorted(images)}')
    return [check_image(c, images[c]) for c in camera_names]


def to_unit_float(img: np.ndarray) -> torch.Tensor:
    """``uint8 (H, W, 3)`` -> float32 ``(H, W, 3)`` in [0, 1] (``x / 255``, as LeRobot)."""
    return torch.from_numpy(np.ascontiguousarray(img)).to(torch.float32) / 255.0


def resize_with_pad(images: torch.Tensor, height: int, width: int,
                    pad_value: float = -1.0) -> torch.Tensor:
    """openpi's resize-with-pad on float images ``(B, H, W, C)`` -> ``(B, height, width, C)``."""
    x = images.permute(0, 3, 1, 2)
    cur_h, cur_w = int(x.shape[2]), int(x.shape[3])
    ratio = max(cur_w / width, cur_h / height)
    new_h, new_w = int(cur_h / ratio), int(cur_w / ratio)
    x = F.interpolate(x, size=(new_h, new_w), mode='bilinear', align_corners=False)
    x = x.clamp(-1.0, 1.0)
    top, rem_h = divmod(height - new_h, 2)
    left, rem_w = divmod(width - new_w, 2)
    x = F.pad(x, (left, left + rem_w, top, top + rem_h), mode='constant', value=pad_value)
    return x.permute(0, 2, 3, 1)


def pi_image(img: np.ndarray, height: int, width: int, order: str = LEROBOT) -> torch.Tensor:
    """One camera image for a PaliGemma tower: float32 ``(3, height, width)``.

    :param img: RGB ``uint8`` ``(H, W, 3)``.
    :param order: ``lerobot`` (pad before ``x * 2 - 1``: pads are -3) or ``openpi``.
    """
    if order not in PAD_ORDERS:
        raise ValueError(f'image pad order must be one of {PAD_ORDERS}, got {order!r}')
    x = to_unit_float(img)[None]
    if order == OPENPI:
        x = x * 2.0 - 1.0
    if tuple(x.shape[1:3]) != (height, width):
        x = resize_with_pad(x, height, width, -1.0)
    if order == LEROBOT:
        x = x * 2.0 - 1.0
    return x[0].permute(2, 0, 1)


def pi_images(batch: Sequence[Dict[str, np.ndarray]], camera_names: Sequence[str], height: int,
              width: int, order: str = LEROBOT) -> torch.Tensor:
    """``(B, n_cams, 3, height, width)`` float32 for a batch of observations' images."""
    rows = []
    for images in batch:
        imgs = camera_images(images, camera_names)
        rows.append(torch.stack([pi_image(i, height, width, order) for i in imgs]))
    return torch.stack(rows)
