"""Progress bars of the demo's long steps (tqdm on stderr, off with ``--no-progress``)."""
from __future__ import annotations

import sys


def progress_bar(total: int, desc: str, progress: bool = True):
    """Return a tqdm bar on stderr for ``total`` items (disabled unless ``progress``)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not progress, leave=False, file=sys.stderr,
                mininterval=1.0)
