"""The ``main()`` both nodes share: ``--help``, rclpy init, spin until Ctrl-C, clean shutdown."""
from __future__ import annotations

import sys
from typing import Callable
from typing import List
from typing import Optional
from typing import Tuple
from typing import Type

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.executors import MultiThreadedExecutor
from rclpy.executors import SingleThreadedExecutor


def wants_help(argv: List[str]) -> bool:
    """Whether ``-h`` / ``--help`` is among the arguments before ``--ros-args``."""
    user_args = argv[1:argv.index('--ros-args')] if '--ros-args' in argv else argv[1:]
    return '-h' in user_args or '--help' in user_args


def run_node(name: str, make_node: Callable[[], object], args: Optional[List[str]],
             usage: Callable[[], str], threads: int = 1,
             startup_errors: Tuple[Type[BaseException], ...] = ()) -> int:
    """Run one node until shutdown and return the exit status.

    :param name: program / node name (``argv[0]`` when ``args`` is given).
    :param make_node: builds the node (after ``rclpy.init``).
    :param args: arguments without the program name, or None for ``sys.argv`` (``ros2 run``).
    :param usage: the ``--help`` text.
    :param threads: executor threads (1 = single-threaded).
    :param startup_errors: exceptions of ``make_node`` printed as ``cannot start`` (status 1).
    """
    argv = list(sys.argv) if args is None else [name, *args]
    if wants_help(argv):
        print(usage())
        return 0
    # plain init / try_shutdown (not ``with rclpy.init()``, which is newer than Humble's rclpy)
    rclpy.init(args=argv)
    node = None
    executor = None
    try:
        node = make_node()
        executor = (MultiThreadedExecutor(num_threads=threads) if threads > 1
                    else SingleThreadedExecutor())
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    except startup_errors as exc:
        print(f'{name}: cannot start: {exc}', file=sys.stderr)
        return 1
    finally:
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
