"""Command line of the ``retain_policy`` node: ``policy_node`` and ``retain-ros node``."""
from __future__ import annotations

import logging
import sys
from typing import List
from typing import Optional

from retain_ros.ros.node_main import run_node
from retain_ros.ros.policy_node.params import PARAMS
from retain_ros.ros.policy_node.node import CONVENTION
from retain_ros.ros.policy_node.node import NODE_NAME
from retain_ros.ros.policy_node.node import PolicyNode
from retain_ros.ros.policy_node.node import StartupError


def usage() -> str:
    """Return the ``--help`` text: how to run the node and every parameter with its default."""
    lines = ['usage: retain-ros node [--ros-args -p NAME:=VALUE ... --params-file FILE]',
             '       ros2 run retain_ros policy_node [--ros-args ...]', '',
             f'Runs the {NODE_NAME} lifecycle node. Alpha convention: {CONVENTION}.', '',
             'parameters:']
    for spec in PARAMS:
        flag = ' (read-only)' if spec.read_only else ''
        lines.append(f'  {spec.name} [{spec.type.name.lower()}] default={spec.default!r}{flag}')
        lines.append(f'      {spec.description}')
    return '\n'.join(lines)


def main(args: Optional[List[str]] = None) -> int:
    """Run the node until shutdown.

    :param args: command-line arguments after the program name (``retain-ros node`` passes its
        remaining arguments); None uses ``sys.argv`` (``ros2 run retain_ros policy_node``).
    :return: process exit status.
    """
    logging.basicConfig(level=logging.INFO, format='[%(levelname)s] [%(name)s]: %(message)s')
    return run_node(NODE_NAME, PolicyNode, args, usage, startup_errors=(StartupError,))


if __name__ == '__main__':
    sys.exit(main())
