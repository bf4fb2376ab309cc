"""The ``main()`` both nodes share: ``--help``, rclpy init, spin until Ctrl-C, clean shutdown."""
from __future__ import annotations

import sys
import threading
from typing import Callable
from typing import List
from typing import Optional
from typing import Tuple
from typing import Type

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.executors import SingleThreadedExecutor


def wants_help(argv: List[str]) -> bool:
    """Whether ``-h`` / ``--help`` is among the arguments before ``--ros-args``."""
    user_args = argv[1:argv.index('--ros-args')] if '--ros-args' in argv else argv[1:]
    return '-h' in user_args or '--help' in user_args


def make_executor(context=None) -> SingleThreadedExecutor:
    """The executor our nodes spin on: single-threaded, on purpose.

    The nodes' callbacks (subscriptions, services, parameters, timers) are short; the slow work
    (inference, fixed-rate command streaming) runs on the nodes' own threads. rclpy's
    ``MultiThreadedExecutor`` (Jazzy / Kilted) re-yields a submitted callback until a pool thread
    starts it, so its spinning thread burns a whole core whenever callbacks are pending; on a
    2-core machine that starved inference and delayed messages by seconds (measured: 100% CPU vs
    10% for the same node on a ``SingleThreadedExecutor``).
    """
    return SingleThreadedExecutor(context=context)


def spin_in_background(executor, name: str = 'ros-spin') -> threading.Thread:
    """Spin ``executor`` on a daemon thread until it (or its context) is shut down.

    For programs that host nodes beside their own work (tests, benchmarks): the thread ends
    quietly when the context shuts down.
    """
    def spin() -> None:
        try:
            executor.spin()
        except ExternalShutdownException:
            pass

    thread = threading.Thread(target=spin, name=name, daemon=True)
    thread.start()
    return thread


def run_node(name: str, make_node: Callable[[], object], args: Optional[List[str]],
             usage: Callable[[], str],
             startup_errors: Tuple[Type[BaseException], ...] = ()) -> int:
    """Run one node until shutdown and return the exit status.

    :param name: program / node name (``argv[0]`` when ``args`` is given).
    :param make_node: builds the node (after ``rclpy.init``).
    :param args: arguments without the program name, or None for ``sys.argv`` (``ros2 run``).
    :param usage: the ``--help`` text.
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
        executor = make_executor()
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
