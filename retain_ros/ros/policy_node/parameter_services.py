"""Slow service work (re-merges, reloads) on one worker thread, off the node's executor.

A live alpha change re-merges the weights: milliseconds for the demo model, seconds at pi0 size
(3.5 B parameters). rclpy runs parameter callbacks inside the ``set_parameters`` service callback,
on the executor's thread; on our single-threaded executor that blocked every subscription, timer
and service of the node for the whole merge (diagnostics went silent, inputs piled up).

Here the slow calls run on :class:`Worker` (one thread, so they are serialised in arrival order)
and the service callbacks are coroutines that ``await`` the worker's result: the caller's
``set_parameters`` still returns only once the merge has succeeded or failed (with its reason),
while the executor keeps spinning the node's other callbacks. Two rclpy details make it work, both
public API and the same on Jazzy and Kilted:

- the coroutine callbacks live in their own :class:`ReentrantCallbackGroup`; a pending coroutine
  keeps its callback group busy, so in the node's default (mutually exclusive) group it would
  block every other default-group callback until the merge ended;
- the awaited :class:`rclpy.task.Future` is created with the node's executor and has a done
  callback: completing it from the worker thread then schedules that callback as an executor
  task, which triggers the executor's guard condition and wakes it to resume the coroutine.
  Without the executor the reply never goes out; without the callback it goes out only at the
  executor's next wake-up for another reason (measured: up to the 1 s diagnostics period).
"""
from __future__ import annotations

import queue
import threading
from typing import Any
from typing import Callable
import weakref

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.parameter_service import ParameterService
from rclpy.task import Future


class Worker:
    """One daemon thread running submitted calls in order; results come back as rclpy futures."""

    def __init__(self, name: str):
        self._calls: 'queue.Queue[Any]' = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, executor, fn: Callable[..., Any], *args: Any) -> Future:
        """Run ``fn(*args)`` on the worker.

        :return: a future bound to ``executor`` that gets the result or the exception.
        """
        future = Future(executor=executor)
        future.add_done_callback(_wake)
        self._calls.put((future, fn, args))
        return future

    def _run(self) -> None:
        while True:
            item = self._calls.get()
            if item is None:
                return
            future, fn, args = item
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: B902 - handed to the awaiting callback
                future.set_exception(exc)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the queued calls, then end the thread."""
        self._calls.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)


def _wake(future: Future) -> None:
    """Done callback whose only job is to make the executor wake up (see the module doc)."""


async def run_on(worker: Worker, node, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on ``worker``, awaited from a coroutine callback of ``node``.

    Called without an executor (the node is not spun, e.g. a direct call in a test) it runs
    inline.
    """
    executor = node.executor
    if executor is None:
        return fn(*args)
    return await worker.submit(executor, fn, *args)


class _InGroup:
    """The node, as seen by :class:`ParameterService`'s constructor: services in ``group``."""

    def __init__(self, node, group):
        self._node = node
        self._group = group

    def get_name(self) -> str:
        return self._node.get_name()

    def create_service(self, *args: Any, **kwargs: Any):
        kwargs.setdefault('callback_group', self._group)
        return self._node.create_service(*args, **kwargs)


class WorkerParameterService(ParameterService):
    """rclpy's six parameter services, with the two ``set`` services run on ``worker``.

    ``describe`` / ``get`` / ``list`` answer at once, also during a merge (the values before the
    set: rclpy stores new values only after the set callbacks accepted them). Create the node with
    ``start_parameter_services=False`` and this service right after ``Node.__init__``.
    """

    def __init__(self, node, worker: Worker, group=None):
        self.callback_group = group or ReentrantCallbackGroup()
        super().__init__(_InGroup(node, self.callback_group))
        self._node_weak_ref = weakref.ref(node)
        self._worker = worker

    async def _set_parameters_callback(self, request, response):
        parent = super()._set_parameters_callback
        return await run_on(self._worker, self._get_node(), parent, request, response)

    async def _set_parameters_atomically_callback(self, request, response):
        parent = super()._set_parameters_atomically_callback
        return await run_on(self._worker, self._get_node(), parent, request, response)
