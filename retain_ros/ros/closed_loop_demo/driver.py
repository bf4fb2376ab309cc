"""The episode driver: runs evaluation episodes through the sim's and the policy node's services.

For each episode it sets the node's alpha parameters (one atomic set: a live in-place re-merge,
no restart), sets the sim's scene parameters and resets it, tags and starts the episode on the
node, and waits for the sim to end it (success test or timeout: the sim calls the node's
``~/end_episode`` and publishes the outcome on ``~/episode``).

With the node's sequential schedule (``retain-ros demo --adaptive``) the node picks the
setting itself at ``~/start_episode``: :meth:`EpisodeDriver.run_scheduled_episode` sets only the
scene, and :meth:`EpisodeDriver.evaluation` reads the node's ``~/evaluation`` topic (the next
setting, the sequential test's status, whether the evaluation is finished).

``retain-ros demo`` drives its whole sweep with it. Run alone, it drives one episode on nodes
that are already running (for instance on another host) and prints ``RESULT {outcome JSON}``::

    python -m retain_ros.ros.closed_loop_demo.driver --task reach_yellow --seed 3 --alpha 0.75
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Dict
from typing import List
from typing import Optional
from typing import Tuple

from rcl_interfaces.srv import SetParameters
from rcl_interfaces.srv import SetParametersAtomically
import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy
from rclpy.qos import QoSProfile
from retain_ros.ros.closed_loop_demo.sweep import DemoError
from retain_ros.ros.closed_loop_demo.sweep import EpisodePlan
from std_msgs.msg import String
from std_srvs.srv import SetBool
from std_srvs.srv import Trigger

#: the nodes the driver talks to
POLICY = 'retain_policy'
SIM = 'sim_robot'


class EpisodeDriver(Node):
    """Drives episodes through the sim's and the policy node's services (node ``retain_demo``)."""

    def __init__(self):
        super().__init__('retain_demo')
        # atomically: all alpha parameters of a setting in one call, hence one re-merge
        self._policy_params = self.create_client(SetParametersAtomically,
                                                 f'/{POLICY}/set_parameters_atomically')
        self._start = self.create_client(Trigger, f'/{POLICY}/start_episode')
        self._end = self.create_client(SetBool, f'/{POLICY}/end_episode')
        self._sim_params = self.create_client(SetParameters, f'/{SIM}/set_parameters')
        self._reset = self.create_client(Trigger, f'/{SIM}/reset')
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._outcome: Optional[dict] = None
        self._reset_before = 0
        #: the highest ``reset`` number of the sim's outcomes seen so far
        self._last_reset = 0
        self.create_subscription(String, f'/{SIM}/episode', self._episode_callback, latched)
        self._evaluation: Optional[dict] = None
        self.create_subscription(String, f'/{POLICY}/evaluation', self._evaluation_callback,
                                 latched)

    def _episode_callback(self, msg: String) -> None:
        try:
            self._outcome = json.loads(msg.data)
        except ValueError:
            self.get_logger().warning(f'unreadable episode outcome: {msg.data!r}')
            return
        self._last_reset = max(self._last_reset, int(self._outcome.get('reset') or 0))

    def _evaluation_callback(self, msg: String) -> None:
        try:
            self._evaluation = json.loads(msg.data)
        except ValueError:
            self.get_logger().warning(f'unreadable evaluation state: {msg.data!r}')

    # ---------------------------------------------------------------------------- plumbing
    def _call(self, client, request, timeout: float = 30.0):
        future = client.call_async(request)
        rclpy.spin_until_future_complete(self, future, timeout_sec=timeout)
        if not future.done() or future.result() is None:
            raise DemoError(f'{client.srv_name} did not answer within {timeout:g} s')
        return future.result()

    def wait_ready(self, timeout: float, processes: Dict[str, subprocess.Popen]) -> None:
        """Wait for both nodes' services (the policy node merges and warms up first).

        :param timeout: seconds before :class:`DemoError`.
        :param processes: the nodes' processes by name, when started here: one that exits
            fails the wait at once.
        """
        deadline = time.monotonic() + timeout
        clients = (self._policy_params, self._start, self._end, self._sim_params, self._reset)
        while not all(c.service_is_ready() for c in clients):
            for name, proc in processes.items():
                if proc.poll() is not None:
                    raise DemoError(f'{name} exited with status {proc.returncode} during start-up')
            if time.monotonic() > deadline:
                missing = [c.srv_name for c in clients if not c.service_is_ready()]
                raise DemoError(f'services not available after {timeout:g} s: {missing}')
            rclpy.spin_once(self, timeout_sec=0.2)

    def set_params(self, client, params: Dict[str, object]) -> None:
        """Set parameters through ``client`` (SetParameters or SetParametersAtomically)."""
        request = client.srv_type.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in params.items()])
        response = self._call(client, request)
        results = [response.result] if hasattr(response, 'result') else response.results
        failed = [r.reason for r in results if not r.successful]
        if failed:
            raise DemoError(f'{client.srv_name} refused {sorted(params)}: {"; ".join(failed)}')

    # ---------------------------------------------------------------------------- episodes
    def run_episode(self, plan: EpisodePlan, timeout: float) -> dict:
        """Run one episode with the plan's alpha setting; return the sim's outcome record."""
        self.set_params(self._policy_params, plan.params)      # live re-merge, no restart
        self._set_scene(plan.split, plan.task, plan.seed)
        started = self._call(self._start, Trigger.Request())
        if not started.success:
            raise DemoError(f'start_episode refused: {started.message}')
        return self._await_outcome(plan.task, plan.seed, timeout)

    def run_scheduled_episode(self, split: str, task: str, seed: int,
                              timeout: float) -> Tuple[Optional[dict], Optional[dict]]:
        """Run one episode of the node's own schedule (it applies the setting) on a scene.

        :param split: the scene's split.
        :param task: the scene's task.
        :param seed: the scene's seed.
        :param timeout: the episode timeout (s); the outcome is awaited 10 s longer.
        :return: ``(start reply JSON, the sim's outcome)``, or ``(None, None)`` when the node
            answers that the evaluation is finished.
        :raises DemoError: the node refused the start for another reason.
        """
        self._set_scene(split, task, seed)
        started = self._call(self._start, Trigger.Request())
        if not started.success:
            if started.message.startswith('evaluation finished'):
                return None, None
            raise DemoError(f'start_episode refused: {started.message}')
        return json.loads(started.message), self._await_outcome(task, seed, timeout)

    def evaluation(self, timeout: float = 10.0, done: Optional[int] = None) -> dict:
        """Return the node's latest ``~/evaluation`` state, waiting for it if needed.

        :param timeout: seconds before :class:`DemoError`.
        :param done: wait for a state with no running episode and at least this many
            ``episodes_done`` (the state published after an episode's end).
        """
        deadline = time.monotonic() + timeout
        while not self._evaluation_ready(done):
            if time.monotonic() > deadline:
                raise DemoError(
                    f'no state on /{POLICY}/evaluation within {timeout:g} s'
                    + ('' if done is None else f' with {done} episode(s) done')
                    + '; is the node running with sequential: true?')
            rclpy.spin_once(self, timeout_sec=0.05)
        return self._evaluation

    def _is_this_episode(self, task: str, seed: int) -> bool:
        # the scene's task and seed, and (the adaptive sweep runs a scene once per setting) a
        # sim reset count above any outcome seen before the last reset
        out = self._outcome
        return (out is not None and out.get('task') == task and out.get('seed') == seed
                and int(out.get('reset') or 0) > self._reset_before)

    def _evaluation_ready(self, done: Optional[int]) -> bool:
        state = self._evaluation
        if state is None or done is None:
            return state is not None
        return state.get('running') is None and int(state.get('episodes_done') or 0) >= done

    def _set_scene(self, split: str, task: str, seed: int) -> str:
        """Set the sim's scene, reset it and tag the coming episode on the node; return the tag."""
        self.set_params(self._sim_params, {'task': task, 'split': split, 'seed': int(seed)})
        self._outcome = None
        self._reset_before = self._last_reset
        reset = self._call(self._reset, Trigger.Request())
        if not reset.success:
            raise DemoError(f'sim reset failed: {reset.message}')
        scene = json.loads(reset.message)
        tag = (f'split={split};task={task};seed={seed};'
               f'variation={scene.get("variation_tag", "")}')
        self.set_params(self._policy_params, {'episode_tag': tag})
        return tag

    def _await_outcome(self, task: str, seed: int, timeout: float) -> dict:
        """Wait for the sim's outcome of the episode opened by the last reset (task, seed)."""
        deadline = time.monotonic() + timeout + 10.0
        while not self._is_this_episode(task, seed):
            if time.monotonic() > deadline:
                raise DemoError(f'no episode outcome from {SIM} within {timeout + 10:g} s')
            rclpy.spin_once(self, timeout_sec=0.05)
        outcome = self._outcome
        if not outcome.get('reported'):
            # the sim could not reach end_episode: end it from here so the log stays complete
            self._call(self._end, SetBool.Request(data=bool(outcome.get('success'))))
        return outcome


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='python -m retain_ros.ros.closed_loop_demo.driver',
        description=f'Run one evaluation episode on running {SIM} and {POLICY} nodes; print '
                    'RESULT {outcome JSON}.')
    p.add_argument('--task', default='reach_yellow')
    p.add_argument('--split', default='new_id')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--alpha', type=float, default=1.0)
    p.add_argument('--timeout', type=float, default=10.0, help='episode timeout (s)')
    p.add_argument('--startup-timeout', type=float, default=120.0,
                   help="seconds to wait for the nodes' services")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Run one episode (see the module docstring); return the exit status."""
    args = _parser().parse_args(argv)
    rclpy.init()
    driver = EpisodeDriver()
    try:
        driver.wait_ready(args.startup_timeout, {})
        outcome = driver.run_episode(
            EpisodePlan({'alpha': args.alpha}, args.split, args.task, args.seed), args.timeout)
        print('RESULT ' + json.dumps(outcome), flush=True)
        return 0
    finally:
        driver.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    sys.exit(main())
