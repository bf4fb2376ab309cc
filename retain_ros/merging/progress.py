"""Progress bars of long merges: one tick per tensor (tqdm, on stderr)."""
from __future__ import annotations

#: the live merger's bars (loading the sources, a merge) appear after this many seconds
LIVE_DELAY_S = 2.0


def tensor_bar(total: int, desc: str, delay: float = 0.0):
    """Make a tqdm bar counting ``total`` tensors that appears only after ``delay`` seconds.

    :return: the bar (call ``update(1)`` per tensor and ``close()``).
    """
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit='tensor', leave=False, delay=delay)
