"""The ``retain-ros`` command line: one console script, one subcommand per job.

Each subcommand lives in its own module and exposes ``main(argv) -> int``; modules are imported
only when their subcommand runs, so ``retain-ros merge`` never imports rclpy.
"""
from __future__ import annotations

import importlib
import sys
from typing import List
from typing import Optional

# name -> (module, function, one-line help)
COMMANDS = {
    'merge': ('retain_ros.merging.commands', 'merge_main',
              'merge a pretrained and finetuned checkpoint(s) into a new checkpoint'),
    'inspect': ('retain_ros.merging.commands', 'inspect_main',
                'show family, dialect and per-group size / change of checkpoints'),
    'node': ('retain_ros.ros.policy_node.main', 'main',
             'run the retain_policy ROS 2 node (same as `ros2 run retain_ros policy_node`)'),
    'sim': ('retain_ros.ros.sim_robot.main', 'main',
            'run the simulated robot ROS 2 node (same as `ros2 run retain_ros sim_robot`)'),
    'demo-train': ('retain_ros.demo.cli', 'main',
                   'train (or reuse) the demo pretrained and finetuned tiny pi0 checkpoints'),
    'demo': ('retain_ros.ros.closed_loop_demo.main', 'main',
             'closed-loop demo: sim + policy node, the demo sweep over alpha, report and plot'),
    'report': ('retain_ros.evaluation.report', 'main',
               'success rate per alpha with 95% Wilson intervals from an episode log'),
    'export': ('retain_ros.recording.export', 'main',
               'recorded episode bags (record parameter) as a LeRobot v3 dataset'),
    'params': ('retain_ros.ros.policy_node.param_reference', 'main',
               'write (--write) or check (--check) docs/parameters.md and config/policy.yaml'),
    'console': ('retain_ros.ros.console.main', 'main',
                'operator console in the browser: start / judge / abort episodes, live status'),
    'embodiment': ('retain_ros.embodiment.cli', 'main',
                   "robot embodiments: 'embodiment show NAME|FILE' prints the resolved mapping"),
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ['usage: retain-ros <command> [options]', '', 'commands:']
    lines += [f'  {n:<{width}}  {h}' for n, (_, _, h) in COMMANDS.items()]
    lines += ['', "Run 'retain-ros <command> --help' for a command's options.",
              'Alpha convention: theta = (1 - alpha)*theta_pre + alpha*theta_ft '
              '(alpha = weight on the finetuned model).']
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help', 'help'):
        print(_usage())
        return 0
    if argv[0] == '--version':
        from retain_ros import __version__
        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f'retain-ros: unknown command {name!r}\n\n{_usage()}', file=sys.stderr)
        return 2
    module_name, func_name, _ = COMMANDS[name]
    func = getattr(importlib.import_module(module_name), func_name)
    result = func(rest)
    return int(result or 0)


if __name__ == '__main__':
    sys.exit(main())
