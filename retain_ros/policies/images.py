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

Empty camera slots (:attr:`~retain_ros.policies.base.Observation.empty_cameras`): LeRobot
(``_preprocess_images`` / ``prepare_images`` of π0, π0.5, SmolVLA) replaces each image feature
missing from the batch by ``ones_like(processed image) * -1`` with image mask False, after the
present cameras; openpi (``DroidInputs``) feeds ``zeros_like`` (uint8) with mask False, which
its ``x / 255 * 2 - 1`` also makes -1. Both orders here map an all-zero ``uint8`` image at the
model size to exactly -1 (no resize, ``0 * 2 - 1``), so an empty slot is :data:`EMPTY_VALUE`
everywhere. A masked slot's tokens are hidden from every other token and left out of the
position ids, so where it sits in the sequence does not matter (LeRobot moves it last, openpi
keeps it in place; only SmolVLA's image special tokens, which stay visible, see the order).
"""
from __future__ import annotations

from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

LEROBOT = 'lerobot'
OPENPI = 'openpi'
PAD_ORDERS = (LEROBOT, OPENPI)
#: Pixel value of an empty camera slot after the ``[0, 1] -> [-1, 1]`` mapping.
EMPTY_VALUE = -1.0


def check_image(name: str, img) -> np.ndarray:
    """Return ``img`` if it is an RGB ``uint8`` ``(H, W, 3)`` array, else raise ``ValueError``."""
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
        raise ValueError(f'camera {name!r}: image must be a uint8 numpy array, got '
                         f'{getattr(img, "dtype", type(img).__name__)}')
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f'camera {name!r}: image must be (H, W, 3) RGB, got shape {img.shape}')
    return img


def empty_slots(empty_cameras: Sequence[str], camera_names: Sequence[str],
                also: Sequence[str] = ()) -> Tuple[str, ...]:
    """Return the slots of ``camera_names`` that an observation marks empty, in model order.

    :param empty_cameras: the observation's ``empty_cameras``.
    :param camera_names: the model's camera slots.
    :param also: other accepted names that are always empty (SmolVLA's ``empty_camera_*``).
    :raises ValueError: not a sequence of names, an unknown name (named), or every slot empty.
    """
    if isinstance(empty_cameras, (str, bytes)) or not isinstance(
            empty_cameras, (tuple, list, set, frozenset)):
        raise ValueError(f'empty_cameras must be a tuple of camera names, got '
                         f'{empty_cameras!r}')
    unknown = [c for c in empty_cameras if c not in camera_names and c not in also]
    if unknown:
        raise ValueError(f'unknown camera slot(s) {unknown} in empty_cameras; the model\'s '
                         f'slots are {list(camera_names)}')
    empty = tuple(c for c in camera_names if c in empty_cameras)
    if len(empty) == len(camera_names):
        raise ValueError(f'every camera slot {list(camera_names)} is marked empty; at least one '
                         'image is needed (LeRobot refuses a batch without any camera)')
    return empty


def camera_images(images: Dict[str, np.ndarray], camera_names: Sequence[str],
                  empty_cameras: Sequence[str] = (),
                  also: Sequence[str] = ()) -> List[Optional[np.ndarray]]:
    """Return the images of ``camera_names``, in order, checked (extra cameras are ignored).

    :param empty_cameras: slots with no camera (:func:`empty_slots`); ``None`` for them, and
        their image, given or not, is not read.
    :param also: extra names accepted in ``empty_cameras`` (:func:`empty_slots`).
    :raises ValueError: a missing / malformed image or a bad ``empty_cameras`` (named).
    """
    if not isinstance(images, dict):
        raise ValueError(f'observation images must be a dict camera -> image, '
                         f'got {type(images).__name__}')
    empty = empty_slots(empty_cameras, camera_names, also)
    missing = [c for c in camera_names if c not in images and c not in empty]
    if missing:
        raise ValueError(f'missing camera image(s) {missing}; the model expects '
                         f'{list(camera_names)}, got {sorted(images)}')
    return [None if c in empty else check_image(c, images[c]) for c in camera_names]


def to_unit_float(img: np.ndarray) -> torch.Tensor:
    """``uint8 (H, W, 3)`` -> float32 ``(H, W, 3)`` in [0, 1] (``x / 255``, as LeRobot).

    A read-only image (the node's zero-copy view of a camera message) is widened to float32 by
    numpy (the same exact values) instead of being wrapped: torch warns on read-only arrays.
    """
    if not img.flags.writeable:
        return torch.from_numpy(np.asarray(img, dtype=np.float32)) / 255.0
    return torch.from_numpy(np.ascontiguousarray(img)).to(torch.float32) / 255.0


def resize_with_pad(images: torch.Tensor, height: int, width: int,
                    pad_value: float = -1.0) -> torch.Tensor:
    """Apply openpi's resize-with-pad: float ``(B, H, W, C)`` -> ``(B, height, width, C)``."""
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


def pi_camera_inputs(batch: Sequence[Dict[str, np.ndarray]], camera_names: Sequence[str],
                     height: int, width: int, order: str = LEROBOT,
                     empty: Optional[Sequence[Sequence[str]]] = None
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Images and image masks of a batch for a PaliGemma tower (π0, π0.5).

    :param batch: per observation, camera -> ``uint8`` image.
    :param empty: per observation, its ``empty_cameras`` (default none).
    :return: ``(B, n_cams, 3, height, width)`` float32 (empty slots all :data:`EMPTY_VALUE`)
        and ``(B, n_cams)`` bool masks (False on empty slots), cameras in model order.
    """
    rows, masks = [], []
    blank = torch.full((3, height, width), EMPTY_VALUE, dtype=torch.float32)
    for row, images in enumerate(batch):
        imgs = camera_images(images, camera_names, empty[row] if empty is not None else ())
        rows.append(torch.stack([blank if i is None else pi_image(i, height, width, order)
                                 for i in imgs]))
        masks.append(torch.tensor([i is not None for i in imgs], dtype=torch.bool))
    return torch.stack(rows), torch.stack(masks)


def pi_images(batch: Sequence[Dict[str, np.ndarray]], camera_names: Sequence[str], height: int,
              width: int, order: str = LEROBOT,
              empty: Optional[Sequence[Sequence[str]]] = None) -> torch.Tensor:
    """``(B, n_cams, 3, height, width)`` float32 for a batch (:func:`pi_camera_inputs`)."""
    return pi_camera_inputs(batch, camera_names, height, width, order, empty)[0]
