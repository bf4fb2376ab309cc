"""``benchmarks/RESULTS.md`` sections: each benchmark's ``--results`` replaces its own only."""
from __future__ import annotations

import os

RESULTS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'RESULTS.md')


def write_section(text: str, section: str, path: str = RESULTS_PATH) -> None:
    """Replace the ``section`` heading's section of ``path`` with ``text``.

    The section is appended when the file has none yet; every other section is kept.
    """
    old = open(path, encoding='utf-8').read() if os.path.exists(path) else '# Benchmarks\n'
    start = old.find(section)
    if start < 0:
        new = old.rstrip('\n') + '\n\n' + text.rstrip('\n') + '\n'
    else:
        end = old.find('\n## ', start + len(section))
        rest = '' if end < 0 else old[end:]
        new = old[:start] + text.rstrip('\n') + '\n' + rest
    with open(path, 'w', encoding='utf-8') as handle:
        handle.write(new)
