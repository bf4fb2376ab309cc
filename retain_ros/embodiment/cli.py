"""``retain-ros embodiment show NAME|FILE [--param k=v ...]`` / ``retain-ros embodiment list``."""
from __future__ import annotations

import argparse
import sys
from typing import Any
from typing import Dict
from typing import List
from typing import Optional

import yaml

from retain_ros.embodiment.errors import EmbodimentError
from retain_ros.embodiment.presets import list_presets
from retain_ros.embodiment.presets import load_embodiment
from retain_ros.embodiment.presets import preset_dirs


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='retain-ros embodiment',
                                description='Show and list robot embodiments (how the policy '
                                'state and actions map onto ROS topics and controllers).')
    sub = p.add_subparsers(dest='command', required=True)
    show = sub.add_parser('show', help='print the resolved layout of a preset or a YAML file')
    show.add_argument('embodiment', help='preset name (retain-ros embodiment list) or file')
    show.add_argument('--param', action='append', default=[], metavar='KEY=VALUE',
                      help="a node parameter for '$KEY' values, YAML-typed "
                      "(e.g. --param joint_names='[a, b]'); repeatable")
    sub.add_parser('list', help='list the presets')
    return p


def _params(items: List[str]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition('=')
        if not sep or not key.strip():
            raise EmbodimentError(f'--param {item!r}: expected KEY=VALUE')
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ''
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command; 0 = success, 2 = a bad file or bad arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.command == 'list':
        for name in list_presets():
            print(name)
        print(f"(from {', '.join(preset_dirs())})", file=sys.stderr)
        return 0
    try:
        emb = load_embodiment(args.embodiment, _params(args.param))
    except EmbodimentError as exc:
        print(f'retain-ros embodiment: {exc}', file=sys.stderr)
        return 2
    print(emb.describe())
    return 0
