"""``retain-ros demo``: the closed-loop demo, through the real ROS graph.

1. trains (or reuses) the demo checkpoints: a generalist tiny pi0 and its few-shot finetune;
2. starts the simulated robot (``sim_robot``) and the policy node (``retain_policy``) as their
   own processes, exactly as ``ros2 run`` would;
3. runs evaluation episodes over an alpha sweep: for each episode it sets the node's alpha
   parameters (a live in-place re-merge, no restart), resets the sim scene, tags and starts the
   episode on the node; the sim ends it from its success test (or timeout) by calling the node's
   ``~/end_episode`` service, and the node appends the episode to ``DIR/episodes.jsonl``;
4. prints the report (success per alpha and split, 95% Wilson intervals) and writes
   ``DIR/report.md`` and ``DIR/success.png``.

The same seeds are used for every alpha setting (paired comparison), and the episode order is
shuffled with a fixed seed so that drift over the run does not favour one setting.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.srv import SetParameters
from rcl_interfaces.srv import SetParametersAtomically
import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy
from rclpy.qos import QoSProfile
from std_msgs.msg import String
from std_srvs.srv import SetBool
from std_srvs.srv import Trigger
from tqdm import tqdm
import yaml

from retain_ros import ALPHA_CONVENTION
from retain_ros.demo import rollout
from retain_ros.evaluation.report import write_report
from retain_ros.evaluation.schedule import describe
from retain_ros.evaluation.schedule import parse_settings
from retain_ros.evaluation.schedule import ScheduleError
from retain_ros.sim.tasks import SPLITS
from retain_ros.sim.tasks import tasks_for_split
from retain_ros.sim.world import JOINT_NAMES
from retain_ros.sim.world import LOWER_LIMITS
from retain_ros.sim.world import UPPER_LIMITS

LOG = logging.getLogger(__name__)

POLICY = 'retain_policy'
SIM = 'sim_robot'
#: Alpha settings of the default sweep (the offline sweep's, :mod:`retain_ros.demo.rollout`):
#: global alphas, the language-only merge, per-group settings (``;``-separated).
DEFAULT_ALPHAS = ','.join(f'{a:g}' for a in rollout.SWEEP_ALPHAS)
DEFAULT_LANGUAGE_ONLY = rollout.SWEEP_LANGUAGE_ONLY
DEFAULT_GROUP_SETTINGS = ';'.join(','.join(f'{k}={v:g}' for k, v in setting.items())
                                  for setting in rollout.SWEEP_GROUP_SETTINGS)
#: Episode protocol (same as the offline harness in retain_ros.demo.rollout).
CONTROL_PERIOD = 0.1
REPLAN_STEPS = rollout.REPLAN_STEPS
EPISODE_TIMEOUT = rollout.EPISODE_STEPS * CONTROL_PERIOD


class DemoError(RuntimeError):
    """The demo could not run (a node failed to start, a service did not answer, ...)."""


@dataclass(frozen=True)
class EpisodePlan:
    """One planned episode: the alpha setting, the scene and its seed."""

    params: Dict[str, float]
    split: str
    task: str
    seed: int

    @property
    def label(self) -> str:
        return describe(self.params)


def build_settings(alphas: str, language_only: Optional[float],
                   group_settings: str = '') -> List[Dict[str, float]]:
    """Alpha settings of the sweep, as node parameters (``alpha``, ``alpha_language``, ...).

    :param alphas: comma-separated global alphas, e.g. ``'0,0.5,1'``.
    :param language_only: alpha of the language group with the others finetuned (RETAIN's
        'merge only the language model'); None or a negative value to leave it out.
    :param group_settings: more settings, ``;``-separated, each in the syntax of
        :func:`~retain_ros.evaluation.schedule.parse_setting` (``'alpha=0.5,action=0'``).
    """
    settings = [a for a in alphas.split(',') if a.strip()]
    if language_only is not None and language_only >= 0:
        settings.append(f'alpha=1,language={language_only:g}')
    settings += [g for g in group_settings.split(';') if g.strip()]
    try:
        return parse_settings(settings)
    except ScheduleError as exc:
        raise DemoError(str(exc)) from exc


def build_plan(settings: Sequence[Dict[str, float]], episodes: int, seed: int,
               splits: Sequence[str] = SPLITS) -> List[EpisodePlan]:
    """Every setting x split x episode, same scenes for every setting, in a shuffled order.

    Generalist episodes cycle through the generalist tasks.
    """
    scenes = []
    for split in splits:
        tasks = tasks_for_split(split)
        for k in range(episodes):
            scenes.append((split, tasks[k % len(tasks)], seed * 1000 + k))
    plan = [EpisodePlan(dict(p), split, task, scene_seed)
            for p in settings for split, task, scene_seed in scenes]
    random.Random(seed).shuffle(plan)
    return plan


def _write_params(path: str, node: str, params: Dict[str, object]) -> str:
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump({node: {'ros__parameters': params}}, f, sort_keys=True)
    return path


def _param_msg(name: str, value) -> ParameterMsg:
    return Parameter(name, value=value).to_parameter_msg()


class DemoRunner(Node):
    """Drives episodes through the sim's and the policy node's services."""

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
        self.create_subscription(String, f'/{SIM}/episode', self._episode_callback, latched)

    def _episode_callback(self, msg: String) -> None:
        try:
            self._outcome = json.loads(msg.data)
        except ValueError:
            self.get_logger().warning(f'unreadable episode outcome: {msg.data!r}')

    # ---------------------------------------------------------------------------- plumbing
    def _call(self, client, request, timeout: float = 30.0):
        future = client.call_async(request)
        rclpy.spin_until_future_complete(self, future, timeout_sec=timeout)
        if not future.done() or future.result() is None:
            raise DemoError(f'{client.srv_name} did not answer within {timeout:g} s')
        return future.result()

    def wait_ready(self, timeout: float, processes: Dict[str, subprocess.Popen]) -> None:
        """Wait for both nodes' services (the policy node merges and warms up first)."""
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
            parameters=[_param_msg(k, v) for k, v in params.items()])
        response = self._call(client, request)
        results = [response.result] if hasattr(response, 'result') else response.results
        failed = [r.reason for r in results if not r.successful]
        if failed:
            raise DemoError(f'{client.srv_name} refused {sorted(params)}: {"; ".join(failed)}')

    # ---------------------------------------------------------------------------- episodes
    def run_episode(self, plan: EpisodePlan, timeout: float) -> dict:
        """Run one episode; return the sim's outcome record."""
        self.set_params(self._policy_params, plan.params)      # live re-merge, no restart
        self.set_params(self._sim_params, {'task': plan.task, 'split': plan.split,
                                           'seed': int(plan.seed)})
        reset = self._call(self._reset, Trigger.Request())
        if not reset.success:
            raise DemoError(f'sim reset failed: {reset.message}')
        scene = json.loads(reset.message)
        tag = (f'split={plan.split};task={plan.task};seed={plan.seed};'
               f'variation={scene.get("variation_tag", "")}')
        self.set_params(self._policy_params, {'episode_tag': tag})
        self._outcome = None
        started = self._call(self._start, Trigger.Request())
        if not started.success:
            raise DemoError(f'start_episode refused: {started.message}')
        deadline = time.monotonic() + timeout + 10.0
        while self._outcome is None or self._outcome.get('seed') != plan.seed \
                or self._outcome.get('task') != plan.task:
            if time.monotonic() > deadline:
                raise DemoError(f'no episode outcome from {SIM} within {timeout + 10:g} s')
            rclpy.spin_once(self, timeout_sec=0.05)
        outcome = self._outcome
        if not outcome.get('reported'):
            # the sim could not reach end_episode: end it from here so the log stays complete
            self._call(self._end, SetBool.Request(data=bool(outcome.get('success'))))
        return outcome


class _Processes:
    """The sim and policy node processes, their logs, and a clean shutdown."""

    def __init__(self, out_dir: str, env: Dict[str, str]):
        self.out_dir, self.env = out_dir, env
        self.procs: Dict[str, subprocess.Popen] = {}
        self._logs = []

    def start(self, name: str, command: str, params_file: str) -> None:
        log_path = os.path.join(self.out_dir, 'logs', f'{name}.log')
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        log = open(log_path, 'w', encoding='utf-8')
        self._logs.append(log)
        argv = [sys.executable, '-m', 'retain_ros.cli', command,
                '--ros-args', '--params-file', params_file]
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            env=self.env)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self._logs:
            log.close()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='retain-ros demo',
        description='Closed-loop demo on the simulated robot: alpha sweep through the real ROS '
                    'graph, report and plot. ' + ALPHA_CONVENTION)
    p.add_argument('--out', default='demo_out', help='output directory (default: %(default)s)')
    p.add_argument('--episodes', type=int, default=10,
                   help='episodes per alpha setting and split (default: %(default)s)')
    p.add_argument('--alphas', default=DEFAULT_ALPHAS,
                   help='global alphas to sweep, comma-separated (default: %(default)s)')
    p.add_argument('--language-only', type=float, default=DEFAULT_LANGUAGE_ONLY,
                   help='also run alpha=1 with this alpha on the language group only; '
                        '-1 to skip (default: %(default)s)')
    p.add_argument('--group-settings', default=DEFAULT_GROUP_SETTINGS,
                   help="more settings with per-group alphas, ';'-separated, e.g. "
                        "'alpha=0.5,action=0;alpha=1,vision=0'; '' to skip "
                        '(default: %(default)s)')
    p.add_argument('--seed', type=int, default=0, help='scene seeds and episode order')
    p.add_argument('--pretrained', default='', help='pretrained checkpoint (default: demo)')
    p.add_argument('--finetuned', default='', help='finetuned checkpoint (default: demo)')
    p.add_argument('--device', default='auto', help='policy device (default: %(default)s)')
    p.add_argument('--embodiment', default='joints',
                   help="the policy node's embodiment: how its actions reach the sim's "
                        'controllers; joints = JointTrajectory to the trajectory controller, '
                        'sim_velocity = velocities to the forward velocity controller, '
                        'sim_joint_command = JointState position commands, or a YAML file '
                        '(default: %(default)s)')
    p.add_argument('--episode-timeout', type=float, default=EPISODE_TIMEOUT,
                   help='seconds before an episode fails (default: %(default)s)')
    p.add_argument('--startup-timeout', type=float, default=300.0,
                   help='seconds to wait for the nodes to come up (default: %(default)s)')
    p.add_argument('--record', action='store_true',
                   help='record every episode as a rosbag2 (mcap) bag in OUT/bags (the '
                        "node's record parameter); export them with 'retain-ros export'")
    p.add_argument('--quick-train', action='store_true',
                   help='train the demo checkpoints with a few steps only (for tests; the '
                        'policy will not be good)')
    p.add_argument('--retrain-generalist', action='store_true',
                   help='train the generalist here (about 23 min on 2 CPU cores) instead of '
                        'using the one shipped in the package')
    return p


def _checkpoints(args) -> Tuple[str, str]:
    if bool(args.pretrained) != bool(args.finetuned):
        raise DemoError('give both --pretrained and --finetuned, or neither')
    if args.pretrained:
        return os.path.abspath(args.pretrained), os.path.abspath(args.finetuned)
    from retain_ros.demo.train import ensure_demo_checkpoints
    from retain_ros.demo.train import quick_settings
    settings = quick_settings() if args.quick_train else None
    return ensure_demo_checkpoints(settings=settings,
                                   retrain_generalist=args.retrain_generalist)


def run_demo(args) -> int:
    """Run the whole demo; see the module docstring."""
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    plan = build_plan(build_settings(args.alphas, args.language_only, args.group_settings),
                      args.episodes, args.seed)
    pretrained, finetuned = _checkpoints(args)
    log_path = os.path.join(out, 'episodes.jsonl')
    if os.path.exists(log_path):
        os.replace(log_path, log_path + '.previous')
    policy_params = _write_params(os.path.join(out, 'policy_params.yaml'), POLICY, {
        'pretrained_path': pretrained, 'finetuned_paths': [finetuned], 'device': args.device,
        'embodiment': args.embodiment,
        'camera_topics': ['camera/image_raw'], 'joint_names': list(JOINT_NAMES),
        'joint_lower_limits': [float(v) for v in LOWER_LIMITS],
        'joint_upper_limits': [float(v) for v in UPPER_LIMITS],
        'control_period': CONTROL_PERIOD, 'replan_steps': REPLAN_STEPS,
        'episode_log': log_path, 'alpha': 1.0, 'record': bool(args.record),
        'record_dir': os.path.join(out, 'bags')})
    sim_params = _write_params(os.path.join(out, 'sim_params.yaml'), SIM, {
        'auto_end_episode': True, 'episode_timeout': float(args.episode_timeout),
        'policy_node': f'/{POLICY}'})
    env = dict(os.environ)
    env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    env.setdefault('ROS_DOMAIN_ID', str(random.Random().randint(1, 100)))
    os.environ.update({k: env[k] for k in ('ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_DOMAIN_ID')})
    print(f'[demo] {len(plan)} episodes ({args.episodes} per setting and split), '
          f'ROS_DOMAIN_ID={env["ROS_DOMAIN_ID"]}; {ALPHA_CONVENTION}', flush=True)
    procs = _Processes(out, env)
    rclpy.init()
    runner = DemoRunner()
    outcomes = {}
    try:
        procs.start(SIM, 'sim', sim_params)
        procs.start(POLICY, 'node', policy_params)
        runner.wait_ready(args.startup_timeout, procs.procs)
        bar = tqdm(plan, desc='episodes', unit='ep')
        for episode in bar:
            outcome = runner.run_episode(episode, args.episode_timeout)
            key = (episode.label, episode.split)
            done, won = outcomes.get(key, (0, 0))
            outcomes[key] = (done + 1, won + int(bool(outcome.get('success'))))
            bar.set_postfix_str(f'{episode.label} {episode.split}: '
                                f'{"ok" if outcome.get("success") else "fail"}')
    finally:
        runner.destroy_node()
        rclpy.try_shutdown()
        procs.stop()
    summary = write_report(log_path, markdown=os.path.join(out, 'report.md'),
                           plot=os.path.join(out, 'success.png'),
                           title='retain_ros demo: success rate vs alpha (simulated arm)')
    from retain_ros.evaluation.report import format_table
    print(format_table(summary))
    if args.record:
        _print_bags(os.path.join(out, 'bags'))
    print(f'[demo] wrote {log_path}, {os.path.join(out, "report.md")}, '
          f'{os.path.join(out, "success.png")}; node logs in {os.path.join(out, "logs")}')
    return 0


def _print_bags(folder: str) -> None:
    bags = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    size = sum(os.path.getsize(os.path.join(folder, b, f)) for b in bags
               for f in os.listdir(os.path.join(folder, b)))
    print(f'[demo] recorded {len(bags)} episode bag(s) in {folder}: {size / 2 ** 20:.1f} MiB, '
          f'{size / 2 ** 20 / max(1, len(bags)):.2f} MiB per episode; as a LeRobot dataset: '
          f'retain-ros export {folder} --out {os.path.dirname(folder)}/lerobot')


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``retain-ros demo``."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='[%(levelname)s] %(name)s: %(message)s')
    try:
        return run_demo(args)
    except DemoError as exc:
        print(f'retain-ros demo: {exc}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
