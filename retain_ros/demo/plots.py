"""The pretrained model's training curves as a PNG (``training_curve.png``)."""
from __future__ import annotations

from typing import Dict
from typing import List
from typing import Optional

#: Validation series of a curve point: (key in ``demo_info.json``, marker style, label).
VALIDATION_SERIES = (('val_success', 'o-', 'closed-loop success'),
                     ('val_grounding', 's--', 'pointing accuracy'))


def plot_curve(curve: List[Dict], path: str, title: str,
               vlm_curve: Optional[List[Dict]] = None) -> None:
    """Write the training curves to ``path`` as a PNG.

    One panel per stage: the VLM pretraining (pointing loss and validation pointing accuracy),
    when there is one, and the actions (flow-matching loss, validation success and pointing).
    Drawn on a :class:`matplotlib.figure.Figure` of its own: no pyplot, no global backend.
    """
    from matplotlib.figure import Figure

    stages = [('VLM pretraining (pointing)', vlm_curve, 'grounding_loss', 'pointing loss')] \
        if vlm_curve else []
    stages.append(('actions (flow matching)', curve, 'loss', 'loss'))
    fig = Figure(figsize=(5.5 * len(stages), 3.4), dpi=90)
    axes = fig.subplots(1, len(stages), squeeze=False)
    for ax, (name, points, key, label) in zip(axes[0], stages):
        ax.plot([c['step'] for c in points], [c[key] for c in points], color='tab:blue')
        ax.set_xlabel('step')
        ax.set_ylabel(label, color='tab:blue')
        ax.set_title(name, fontsize=10)
        ax2 = ax.twinx()
        ax2.set_ylim(0, 1)
        ax2.set_ylabel('validation', color='tab:orange')
        for field, style, series in VALIDATION_SERIES:
            val = [(c['step'], c[field]) for c in points if c.get(field) is not None]
            if val:
                ax2.plot(*zip(*val), style, color='tab:orange', label=series, markersize=4)
        if ax2.get_legend_handles_labels()[0]:
            ax2.legend(loc='center right', fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
