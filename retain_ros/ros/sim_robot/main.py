"""Command line of the ``sim_robot`` node: ``sim_robot`` and ``retain-ros sim``."""
from __future__ import annotations

import sys
from typing import List
from typing import Optional

from retain_ros.ros.node_main import run_node
from retain_ros.ros.sim_robot.node import NODE_NAME
from retain_ros.ros.sim_robot.node import SimRobotNode
from retain_ros.ros.sim_robot.parameters import PARAMETERS


def usage() -> str:
    """Return the ``--help`` text: the command lines, every parameter, services and topics."""
    lines = ['usage: retain-ros sim [--ros-args -p NAME:=VALUE ...]',
             '       ros2 run retain_ros sim_robot [--ros-args -p NAME:=VALUE ...]', '',
             'Simulated arm + controllers + camera. Parameters:']
    for name, (default, desc) in PARAMETERS.items():
        lines.append(f'  {name} (default {default!r}): {desc.description}')
    lines += ['', 'Services: ~/reset (std_srvs/Trigger). Topics out: joint_states, '
              'gripper/joint_states, camera/image_raw, instruction (latched), ~/scene, '
              '~/success, ~/episode.']
    return '\n'.join(lines)


def main(args: Optional[List[str]] = None) -> int:
    """Run the node until Ctrl-C.

    :param args: command-line arguments without the program name (``retain-ros sim``), or None
        to use ``sys.argv`` (``ros2 run``).
    :return: exit status.
    """
    return run_node(NODE_NAME, SimRobotNode, args, usage)


if __name__ == '__main__':
    sys.exit(main())
