"""``retain-ros demo``: the closed-loop demo through the real ROS graph, the demo sweep.

1. trains (or reuses) the demo checkpoints: a pretrained tiny pi0 and its few-shot finetune;
2. starts the simulated robot (``sim_robot``) and the policy node (``retain_policy``) as their
   own processes, exactly as ``ros2 run`` would (:mod:`.processes`);
3. runs the demo sweep (:mod:`.sweep`: every alpha setting on the same scenes, shuffled) with the
   episode driver (:mod:`.driver`): per episode a live re-merge, a sim reset, the episode started
   on the node and ended by the sim, which the node appends to ``DIR/episodes.jsonl``;
4. prints the report (success per alpha and split, 95% Wilson intervals) and writes
   ``DIR/report.md`` and ``DIR/success.png``.

With ``--adaptive`` step 3 is the adaptive sweep (:mod:`.adaptive`): the node's sequential
schedule picks each episode's setting and stops when its tests have decided or the budget is
spent; the demo prints the decisions and the episodes used next to the fixed sweep's, and writes
``DIR/adaptive.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
from typing import List
from typing import Optional
from typing import Tuple

import rclpy
from retain_ros import ALPHA_CONVENTION
from retain_ros.evaluation.tables import format_table
from retain_ros.evaluation.report import write_report
from retain_ros.ros.closed_loop_demo import adaptive
from retain_ros.ros.closed_loop_demo.driver import EpisodeDriver
from retain_ros.ros.closed_loop_demo.driver import POLICY
from retain_ros.ros.closed_loop_demo.driver import SIM
from retain_ros.ros.closed_loop_demo.processes import NodeProcesses
from retain_ros.ros.closed_loop_demo.processes import write_params
from retain_ros.ros.closed_loop_demo.sweep import build_plan
from retain_ros.ros.closed_loop_demo.sweep import build_settings
from retain_ros.ros.closed_loop_demo.sweep import DEFAULT_ALPHAS
from retain_ros.ros.closed_loop_demo.sweep import DEFAULT_GROUP_SETTINGS
from retain_ros.ros.closed_loop_demo.sweep import DEFAULT_LANGUAGE_ONLY
from retain_ros.ros.closed_loop_demo.sweep import DEFAULT_SPLITS
from retain_ros.ros.closed_loop_demo.sweep import DemoError
from retain_ros.ros.closed_loop_demo.sweep import EPISODE_TIMEOUT
from retain_ros.ros.closed_loop_demo.sweep import parse_splits
from retain_ros.ros.closed_loop_demo.sweep import policy_params
from tqdm import tqdm


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='retain-ros demo',
        description='Closed-loop demo on the simulated robot: the demo sweep over alpha '
                    'settings through the real ROS graph, report and plot. ' + ALPHA_CONVENTION)
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
    p.add_argument('--splits', default=','.join(DEFAULT_SPLITS),
                   help='scene splits to run, comma-separated (default: %(default)s); with '
                        '--adaptive the settings are compared on them pooled')
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
    p.add_argument('--adaptive', action='store_true',
                   help="let the policy node's sequential test decide how many episodes each "
                        'setting gets: settings decided worse are dropped, the run stops when '
                        'every comparison is decided or the budget is spent (docs/demo.md, '
                        '"Adaptive sweep")')
    p.add_argument('--reference', default=adaptive.REFERENCE,
                   help="--adaptive: the setting the others are compared with, or 'best' "
                        '(all pairs) (default: %(default)s)')
    p.add_argument('--level', type=float, default=adaptive.LEVEL,
                   help='--adaptive: family-wise false-positive rate (default: %(default)s)')
    p.add_argument('--power', type=float, default=adaptive.POWER,
                   help='--adaptive: power at the design gap (default: %(default)s)')
    p.add_argument('--gap', type=float, default=adaptive.GAP,
                   help='--adaptive: design gap in success rate (default: %(default)s)')
    p.add_argument('--budget', type=int, default=None,
                   help='--adaptive: episodes per setting at most (default: --episodes x '
                        "the number of splits, the fixed sweep's episodes per setting)")
    p.add_argument('--retrain-pretrained', action='store_true',
                   help='train the pretrained model here (about 23 min on 2 CPU cores) instead of '
                        'using the one shipped in the package')
    return p


def _checkpoints(args) -> Tuple[str, str]:
    if bool(args.pretrained) != bool(args.finetuned):
        raise DemoError('give both --pretrained and --finetuned, or neither')
    if args.pretrained:
        return os.path.abspath(args.pretrained), os.path.abspath(args.finetuned)
    from retain_ros.demo.pipeline import ensure_demo_checkpoints
    from retain_ros.demo.settings import quick_settings
    settings = quick_settings() if args.quick_train else None
    return ensure_demo_checkpoints(settings=settings,
                                   retrain_pretrained=args.retrain_pretrained)


def run_demo(args) -> int:
    """Run the whole demo (see the module docstring); return the exit status."""
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    settings = build_settings(args.alphas, args.language_only, args.group_settings)
    splits = parse_splits(args.splits)
    plan = build_plan(settings, args.episodes, args.seed, splits)
    sequential = {}
    if args.adaptive:
        budget = args.budget if args.budget is not None else len(splits) * args.episodes
        options = adaptive.AdaptiveOptions(args.reference, args.level, args.power, args.gap,
                                           budget)
        sequential = adaptive.sequential_params(settings, options, args.seed)
    pretrained, finetuned = _checkpoints(args)
    log_path = os.path.join(out, 'episodes.jsonl')
    if os.path.exists(log_path):
        os.replace(log_path, log_path + '.previous')
    policy_file = write_params(os.path.join(out, 'policy_params.yaml'), POLICY, policy_params(
        pretrained, finetuned, log_path, device=args.device, embodiment=args.embodiment,
        record=bool(args.record), record_dir=os.path.join(out, 'bags'), **sequential))
    sim_file = write_params(os.path.join(out, 'sim_params.yaml'), SIM, {
        'auto_end_episode': True, 'episode_timeout': float(args.episode_timeout),
        'policy_node': f'/{POLICY}'})
    env = dict(os.environ)
    env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    env.setdefault('ROS_DOMAIN_ID', str(random.Random().randint(1, 100)))
    os.environ.update({k: env[k] for k in ('ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_DOMAIN_ID')})
    if sequential:
        print(f'[demo] adaptive sweep: {len(settings)} settings, at most '
              f'{sequential["sequential_budget"]} episodes each, reference '
              f'{sequential["sequential_reference"]}, ROS_DOMAIN_ID={env["ROS_DOMAIN_ID"]}; '
              f'{ALPHA_CONVENTION}', flush=True)
    else:
        print(f'[demo] {len(plan)} episodes ({args.episodes} per setting and split), '
              f'ROS_DOMAIN_ID={env["ROS_DOMAIN_ID"]}; {ALPHA_CONVENTION}', flush=True)
    procs = NodeProcesses(out, env)
    rclpy.init()
    driver = EpisodeDriver()
    result = None
    try:
        procs.start(SIM, 'sim', sim_file)
        procs.start(POLICY, 'node', policy_file)
        driver.wait_ready(args.startup_timeout, procs.procs)
        if sequential:
            result = _run_adaptive(driver, sequential['sequential_budget'], len(settings),
                                   splits, args)
        else:
            _run_fixed(driver, plan, args.episode_timeout)
    finally:
        driver.destroy_node()
        rclpy.try_shutdown()
        procs.stop()
    summary = write_report(log_path, markdown=os.path.join(out, 'report.md'),
                           plot=os.path.join(out, 'success.png'),
                           title='retain_ros demo: success rate vs alpha (simulated arm)')
    print(format_table(summary))
    if result is not None:
        with open(os.path.join(out, 'adaptive.json'), 'w', encoding='utf-8') as f:
            json.dump({'counts': result.counts, 'episodes': result.episodes,
                       'fixed_episodes': len(plan), 'evaluation': result.state}, f, indent=2)
        print(adaptive.format_result(result, len(settings), len(plan), args.episodes))
    if args.record:
        _print_bags(os.path.join(out, 'bags'))
    print(f'[demo] wrote {log_path}, {os.path.join(out, "report.md")}, '
          f'{os.path.join(out, "success.png")}; node logs in {os.path.join(out, "logs")}')
    return 0


def _run_fixed(driver: EpisodeDriver, plan, timeout: float) -> None:
    bar = tqdm(plan, desc='episodes', unit='ep')
    for episode in bar:
        outcome = driver.run_episode(episode, timeout)
        bar.set_postfix_str(f'{episode.label} {episode.split}: '
                            f'{"ok" if outcome.get("success") else "fail"}')


def _run_adaptive(driver: EpisodeDriver, budget: int, settings: int, splits,
                  args) -> adaptive.AdaptiveResult:
    bar = tqdm(total=budget * settings, desc='episodes (at most)', unit='ep')

    def progress(label, success, state):
        bar.update(1)
        summary = (state.get('sequential') or {}).get('summary', '')
        bar.set_postfix_str(f'{label}: {"ok" if success else "fail"}; {summary}')

    try:
        return adaptive.run_adaptive(driver, adaptive.adaptive_scenes(budget, args.seed, splits),
                                     args.episode_timeout, progress)
    finally:
        bar.close()


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
