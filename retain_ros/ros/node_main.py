"""The ``main()`` both nodes share: ``--help``, rclpy init, spin until Ctrl-C, clean shutdown."""
from __future__ import annotations

import signal
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
    """Return the executor our nodes spin on: single-threaded, on purpose.

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


#: seconds between two checks for a shutdown signal while the node spins (rclpy's own signal
#: handler wakes the executor, but its wait goes on until a callback is ready or this timeout)
SIGNAL_POLL_S = 0.1


def run_node(name: str, make_node: Callable[[], object], args: Optional[List[str]],
             usage: Callable[[], str],
             startup_errors: Tuple[Type[BaseException], ...] = ()) -> int:
    """Run one node until shutdown and return the exit status.

    SIGINT and SIGTERM end the node with status 0, also when they come twice (a terminal's Ctrl-C
    reaches the whole process group and ``ros2 launch`` forwards another one) and whatever the
    node was doing (see :class:`ShutdownSignals`): the cleanup is never interrupted.

    :param name: program / node name (``argv[0]`` when ``args`` is given).
    :param make_node: builds the node (after ``rclpy.init``).
    :param args: arguments without the program name, or None for ``sys.argv`` (``ros2 run``).
    :param usage: the ``--help`` text.
    :param startup_errors: exceptions of ``make_node`` printed as ``cannot start`` (status 1).
    :return: 0 after a shutdown signal (or an external shutdown), 1 after a startup error.
    """
    argv = list(sys.argv) if args is None else [name, *args]
    if wants_help(argv):
        print(usage())
        return 0
    signals = ShutdownSignals()
    signals.install()
    held: dict = {'node': None, 'executor': None}
    status = 0
    try:
        status = _start_and_spin(name, make_node, argv, startup_errors, signals, held)
    except KeyboardInterrupt:
        # the first signal while starting: configure (or rclpy.init) was interrupted
        signals.stop_interrupting()
        print(f'{name}: interrupted while starting; exiting', file=sys.stderr)
        status = 0
    finally:
        signals.stop_interrupting()
        _clean_up(name, held['executor'], held['node'])
        signals.uninstall()
    return status


def _start_and_spin(name: str, make_node: Callable[[], object], argv: List[str],
                    startup_errors: Tuple[Type[BaseException], ...], signals: 'ShutdownSignals',
                    held: dict) -> int:
    """``rclpy.init``, build the node, spin it; the objects to clean up go into ``held``."""
    # plain init / try_shutdown (not ``with rclpy.init()``, which is newer than Humble's rclpy)
    try:
        rclpy.init(args=argv)
        # the executor before the node: once the node is up, a signal may shut the context down
        # at any moment (rclpy's handler does on Jazzy), and an executor cannot be made then
        held['executor'] = make_executor()
        held['node'] = make_node()
    except startup_errors as exc:
        signals.stop_interrupting()
        if signals.received:
            return 0        # interrupted: e.g. the context went away under configure
        print(f'{name}: cannot start: {exc}', file=sys.stderr)
        return 1
    except Exception:  # noqa: B902 - a failure caused by the shutdown signal is no error
        signals.stop_interrupting()
        if signals.received:
            return 0
        raise
    # from here on a signal does not raise (it would cut a callback short): it is noted, and the
    # spin ends before the next callback
    signals.stop_interrupting()
    executor = held['executor']
    try:
        executor.add_node(held['node'])
        while not signals.received and executor.context.ok():
            executor.spin_once(timeout_sec=SIGNAL_POLL_S)
    except ExternalShutdownException:
        pass
    except Exception:  # noqa: B902 - e.g. RCLError: rclpy's signal handler shut the context down
        if signals.received or not executor.context.ok():
            return 0        # under the wait (Jazzy: "failed to create timer: ... not valid")
        raise
    return 0


def _clean_up(name: str, executor, node) -> None:
    """Destroy the node, shut the executor and rclpy down: every step, whatever fails.

    The node goes first, while its executor still exists: destroying it joins its worker threads
    (a live re-merge in flight), whose results are handed to that executor.
    """
    steps = []
    if executor is not None and node is not None:
        steps.append(('removing the node', lambda: executor.remove_node(node)))
    if node is not None:
        steps.append(('node destruction', node.destroy_node))
    if executor is not None:
        steps.append(('executor shutdown', executor.shutdown))
    steps.append(('rclpy shutdown', rclpy.try_shutdown))
    for what, step in steps:
        try:
            step()
        except KeyboardInterrupt:
            pass            # cannot come from ShutdownSignals any more; a stray one ends nothing
        except Exception as exc:  # noqa: B902 - report it in one line and go on cleaning up
            print(f'{name}: {what} failed: {type(exc).__name__}: {exc}', file=sys.stderr)


class ShutdownSignals:
    """SIGINT / SIGTERM handling of :func:`run_node`: the first one stops, later ones are noted.

    The handlers are installed before ``rclpy.init``, so rclpy's own signal handler (which wakes
    the executors, depending on the version shuts the contexts down, and chains to the handler it
    found) calls them. While the node is starting (``rclpy.init``, ``make_node``: loading and
    merging the checkpoints with autostart), the first signal raises ``KeyboardInterrupt`` in the
    main thread to abandon the start. Once
    :meth:`stop_interrupting` was called (the node spins, or the cleanup began) no signal raises:
    signals are only noted (:attr:`received`), the spin loop stops between two callbacks, and a
    second SIGINT cannot cut the cleanup short (executor shutdown, deactivate, destroy). (Python's
    default SIGINT handler raises ``KeyboardInterrupt`` on every SIGINT, cleanup or not.)
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: List[int] = []
        self._interrupt = True
        self._previous: dict = {}

    def install(self) -> None:
        """Install the handlers (main thread only; elsewhere nothing is installed)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def stop_interrupting(self) -> None:
        """From now on signals are only counted; none raises."""
        self._interrupt = False

    def uninstall(self) -> None:
        """Put the previous handlers back; after a shutdown signal, ignore SIGINT and SIGTERM.

        After a shutdown signal the process is about to exit, and a late signal (the terminal's
        or the launch's second one) must not end it with a traceback or as killed: Python's
        finalization puts the default action back for every signal with a Python handler (a
        SIGINT then kills the process: status -2), but leaves ignored signals ignored.
        """
        for signum, previous in self._previous.items():
            if self.received:
                signal.signal(signum, signal.SIG_IGN)
            else:
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        first = not self.received
        self.received.append(signum)
        if first and self._interrupt:
            self._interrupt = False
            raise KeyboardInterrupt(f'signal {signal.Signals(signum).name}')
