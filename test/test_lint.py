"""Lint as ament packages run it: flake8 at the project's line length and pep257 docstrings."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: what is linted: the package, its launch files, the tests, the benchmarks and setup.py
PATHS = ('retain_ros', 'launch', 'test', 'benchmarks', 'setup.py')
#: pydocstyle's pep257 convention; like ament_pep257 with ``--add-ignore D100..D107``, a public
#: name without a docstring is allowed, a docstring that is there must be well formed
PEP257 = ('--convention=pep257', '--add-ignore=D100,D101,D102,D103,D104,D105,D106,D107')


def _paths():
    return [p for p in PATHS if os.path.exists(os.path.join(ROOT, p))]


def _run(args):
    result = subprocess.run([sys.executable, '-m', *args], cwd=ROOT, capture_output=True,
                            text=True)
    return result.returncode, (result.stdout + result.stderr).strip()


@pytest.mark.linter
def test_flake8():
    pytest.importorskip('flake8')
    rc, out = _run(['flake8', '--max-line-length=99', '--extend-exclude=.venv*,data',
                    *_paths()])
    assert rc == 0, out


@pytest.mark.linter
def test_pep257():
    pytest.importorskip('pydocstyle')
    rc, out = _run(['pydocstyle', *PEP257, *_paths()])
    assert rc == 0, out
