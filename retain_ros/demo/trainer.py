"""The demo's training loop, and the seeded scope every training step runs in."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable
from typing import Iterator
from typing import List
from typing import Optional

import numpy as np
import torch

from retain_ros.demo.dataset import TensorDataset
from retain_ros.demo.objectives import flow_matching_loss
from retain_ros.demo.progress import progress_bar


@contextmanager
def seeded_torch(seed: int) -> Iterator[None]:
    """Run the block with torch's CPU random generator seeded, and restore it afterwards.

    The model draws its flow-matching noise and times from that generator: seeding it makes a
    run reproducible, restoring it leaves the caller's random state as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        yield


def train_model(model, dataset: TensorDataset, steps: int, lr: float, batch_size: int,
                seed: int, desc: str, progress: bool = True,
                on_step: Optional[Callable[[int, float], None]] = None,
                loss_fn=flow_matching_loss) -> List[float]:
    """Train ``model`` in place with AdamW, linear warm-up and cosine decay.

    :param seed: seeds the batch draws and, inside :func:`seeded_torch`, the model's noise.
    :param desc: the progress bar's label.
    :param on_step: optional ``on_step(step, loss)`` after every step (1-based).
    :param loss_fn: ``loss_fn(model, batch)`` (default :func:`flow_matching_loss`).
    :return: the loss of every step.
    """
    generator = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, min(100, steps // 10))

    def schedule(step):
        if step < warmup:
            return (step + 1) / warmup
        done = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + np.cos(np.pi * min(1.0, done)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    model.train()
    losses: List[float] = []
    with seeded_torch(seed), progress_bar(int(steps), desc, progress) as bar:
        for _ in range(int(steps)):
            index = torch.randint(0, len(dataset), (min(batch_size, len(dataset)),),
                                  generator=generator)
            loss = loss_fn(model, dataset.batch(index))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(len(losses), losses[-1])
            bar.update(1)
            if len(losses) % 20 == 0:
                bar.set_postfix(loss=f'{np.mean(losses[-20:]):.4f}')
    model.eval()
    return losses
