"""Training objectives of the demo's tiny pi0: flow matching (actions) and pointing (VLM).

- :func:`flow_matching_loss`: pi0's own loss, for the action stage and the finetune;
- :func:`pointing_loss`: the VLM pretraining objective (stage 1 of the pretrained model, see
  :func:`retain_ros.demo.pretraining.pretrain_vlm`): mark the image token holding the instructed
  block. It adds no parameter: the checkpoint stays a plain pi0.
"""
from __future__ import annotations

from typing import Callable
from typing import Dict
from typing import Tuple

import torch

from retain_ros.demo.dataset import TensorDataset
from retain_ros.demo.model import LOCATION_BINS

#: The word whose embedding asks an image token "is the instructed block here?"
POINT_WORD = 'point'
#: Batch keys that are labels, not model inputs.
LABELS = ('target_location',)


def flow_matching_loss(model, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Return pi0's training loss: MSE of the predicted flow velocity (noise - actions)."""
    return model(**{k: v for k, v in batch.items() if k not in LABELS}).loss


def vlm_hidden(model, batch: Dict[str, torch.Tensor], layer: int = 0) -> torch.Tensor:
    """Return the VLM's hidden states ``(B, T, H)`` of the prefix (image tokens, then text).

    :param layer: the VLM layer whose output is read; 0 = the last, an earlier one through the
        final norm (a "logit lens").
    """
    inner = model.model
    mask = batch['attention_mask']
    embeds = inner.embed_prefix(batch['input_ids'], batch['pixel_values'],
                                batch['pixel_attention_mask'])
    out = inner.vlm(inputs_embeds=embeds, attention_mask=mask, position_ids=mask.cumsum(-1) - 1,
                    token_type_ids=torch.zeros_like(mask), use_cache=False,
                    output_hidden_states=bool(layer))
    if layer:
        return inner.vlm.language_model.norm(out.hidden_states[int(layer)])
    return out.last_hidden_state


def image_grid(model) -> int:
    """Return the number of image tokens per side (the SigLIP patch grid)."""
    vision = model.config.vlm_config.vision_config
    return int(vision.image_size) // int(vision.patch_size)


def pointing_logits(model, batch: Dict[str, torch.Tensor], point_id: int,
                    layer: int) -> torch.Tensor:
    """Return the ``(B, tokens)`` pointing scores of the image tokens after VLM layer ``layer``.

    Each score is the token's hidden state (through the final norm) against the embedding of
    ``point_id``.
    """
    hidden = vlm_hidden(model, batch, layer)
    table = model.model.vlm.get_input_embeddings().weight
    return hidden[:, :image_grid(model) ** 2] @ table[int(point_id)]


def pointing_labels(model, target_location: torch.Tensor) -> torch.Tensor:
    """Return the index of the image token (row-major patch) holding each instructed block.

    :param target_location: the blocks' ``(N, 2)`` location bins
        (:func:`retain_ros.demo.dataset.location_bins`).
    """
    grid = image_grid(model)
    cells = target_location * grid // LOCATION_BINS
    return cells[:, 1] * grid + cells[:, 0]


def pointing_loss(model, batch: Dict[str, torch.Tensor], point_id: int,
                  layer: int) -> torch.Tensor:
    """Return the VLM's pointing loss: cross-entropy over the image tokens.

    The label is the token that holds the instructed block, as referring-segmentation
    pretraining marks it. The action expert then has one thing to find in the prefix (the
    marked token; its content says where it is), the same for every instruction, instead of a
    colour-dependent choice between blocks. ``layer`` must be one the expert sees: it attends to
    the keys and values computed from the states *entering* each layer, so the output of layer
    ``l`` reaches it from layer ``l + 1`` on.
    """
    return torch.nn.functional.cross_entropy(pointing_logits(model, batch, point_id, layer),
                                             pointing_labels(model, batch['target_location']))


def share_of_hits(model, dataset: TensorDataset, hits, block: int = 256) -> float:
    """Return the share of ``dataset``'s samples for which ``hits(model, batch)`` holds.

    ``hits`` returns a ``(B,)`` bool tensor; it runs in eval mode without gradients, and the
    training mode is restored.
    """
    was_training = model.training
    model.eval()
    count = 0
    with torch.no_grad():
        for start in range(0, len(dataset), block):
            batch = dataset.batch(torch.arange(start, min(len(dataset), start + block)))
            count += int(hits(model, batch).sum())
    model.train(was_training)
    return count / max(1, len(dataset))


def pointing_accuracy(model, dataset: TensorDataset, point_id: int, layer: int) -> float:
    """Return the share of samples whose highest-scoring image token holds the instructed block."""
    return share_of_hits(model, dataset, lambda m, batch: (
        pointing_logits(m, batch, point_id, layer).argmax(-1)
        == pointing_labels(m, batch['target_location'])))


def pointing_objective(tokenizer, layer: int) -> Tuple[Callable, Callable]:
    """Return ``(loss_fn(model, batch), accuracy(model, dataset))`` of pointing at ``layer``.

    :raises ValueError: the tokenizer has no :data:`POINT_WORD` token.
    """
    point_id = tokenizer.token_to_id(POINT_WORD)
    if point_id is None:
        raise ValueError(f'the tokenizer has no {POINT_WORD!r} token; pointing needs the demo '
                         'word tokenizer')
    layer = int(layer)
    return (lambda model, batch: pointing_loss(model, batch, point_id, layer),
            lambda model, dataset: pointing_accuracy(model, dataset, point_id, layer))
