"""Full-size π0 benchmark: memory plan, startup per mode, peak RSS, α-change cost, inspect, merge.

Writes two random-weight π0 checkpoints in LeRobot layout (pretrained and finetuned, different
seeds, streamed tensor by tensor so writing them needs little memory), then measures each thing in
its own child process (peak RSS = the child's ``VmHWM`` / ``ru_maxrss``, whole process):

- ``plan``: what :func:`retain_ros.merging.memory.plan_memory` says for every ``keep_sources``
  mode (needs, fits, the refusal message), without allocating;
- ``startup``: build the module (uninitialized) and ``LiveMerger`` it in one mode: phases (open,
  load sources, merge), total, then three α changes; modes the plan refuses are reported as
  refused, and modes needing more than ``MemAvailable - 4 GiB`` are skipped by the benchmark
  itself (other people share the machine);
- ``floor``: copy bandwidth (read + write of a 512 MiB tensor copy) and the time to read both
  checkpoint files once (``pread`` into one buffer);
- ``inspect`` / ``merge``: the CLI commands in a child;
- ``mergekit``: the same pair rewritten in transformers' layout (the tensors' bytes copied
  verbatim under transformers' key names, with transformers' ``config.json``; mergekit cannot read
  LeRobot's config), then ``retain-ros merge`` and mergekit's ``linear`` (its own venv,
  ``benchmarks/.venv-mergekit``, as in ``merge_bench.py``) on it: wall, peak RSS, which tensors
  each wrote, and the largest difference on a sample of the common ones;
- ``node``: the ``retain_policy`` node itself, in-process in a child on a real rclpy graph, with
  the DEFAULT memory settings (``keep_sources`` and ``dtype`` not given, i.e. ``auto``): time to
  active (the node's phase log lines), one camera image + joint state -> first chunk (the chunk's
  actions are finite, 14 joints), then one live α change through the ``set_parameters`` service
  while the benchmark counts the ``/diagnostics`` messages that arrive during the merge (the
  executor is not blocked) and peak RSS. ``control_period`` is set so a chunk computed in tens of
  seconds on CPU is not dropped as late (its actions would all be in the past otherwise).

Sizes: ``full`` = transformers' default ``PI0Config`` (PaliGemma gemma_2b + gemma_300m expert,
3.50 B parameters; 6.5 GiB per checkpoint in bfloat16); ``mid`` = a narrower π0 (0.73 B) for
host / device mode on a shared 24 GB machine; ``tiny`` = the built-in tiny π0 (seconds, smoke
test). Not run in CI.

Usage: ``nice -n 15 .venv/bin/python benchmarks/full_size.py --size full [--work DIR]
[--only plan,startup,...] [--modes auto,disk] [--keep]``. The checkpoints are deleted at the end
unless ``--keep``. Results: one JSON line per measurement on stdout and ``--out`` (JSON).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

GIB = float(1 << 30)
SAFETY_BYTES = 4 << 30  # never start a measurement that needs more than MemAvailable - this

MID_OVERRIDES = {
    'text': dict(hidden_size=1024, num_hidden_layers=12, intermediate_size=8192,
                 num_attention_heads=8, num_key_value_heads=1, head_dim=128),
    'dit': dict(hidden_size=512, num_hidden_layers=12, intermediate_size=2048,
                num_attention_heads=8, num_key_value_heads=1, head_dim=64),
    'vision': dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                   num_attention_heads=12, patch_size=14),
    'vocab_size': 257152, 'projection_dim': 1024, 'image_token_id': 257152,
}


def policy_config(size: str, camera_names=('base',)) -> dict:
    """LeRobot-style π0 config of ``size`` (tiny / mid / full) with ``camera_names``."""
    from retain_ros.policies.pi0.configuration_pi0 import tiny_pi0_config

    cams = tuple(camera_names)
    if size == 'tiny':
        return tiny_pi0_config(14, 14, chunk_size=10, camera_names=cams, image_size=64,
                               num_inference_steps=2, max_dim=32)
    cfg = tiny_pi0_config(14, 14, chunk_size=50, camera_names=cams, image_size=224,
                          num_inference_steps=10, max_dim=32)
    if size == 'full':  # = transformers' default PI0Config (assert_default_pi0)
        cfg['paligemma_variant'], cfg['action_expert_variant'] = 'gemma_2b', 'gemma_300m'
    else:
        cfg['paligemma_variant'] = cfg['action_expert_variant'] = 'custom'
        cfg['model_overrides'] = MID_OVERRIDES
    return cfg


def assert_default_pi0(spec) -> None:
    """Check that the model of ``spec`` has the tensor shapes of transformers' ``PI0Config``.

    Both are built on the meta device (no memory).
    """
    import torch
    from transformers import PI0Config
    from transformers import PI0ForConditionalGeneration

    def shapes(config):
        with torch.device('meta'):
            model = PI0ForConditionalGeneration._from_config(config)
        return {k: tuple(v.shape) for k, v in model.state_dict().items()}

    assert shapes(spec.hf_config) == shapes(PI0Config()), \
        'the full-size config must match transformers default PI0Config'


def _proc_bytes(path: str, field: str) -> int:
    """Return a ``field: N kB`` line of a /proc file, in bytes (0 when absent)."""
    with open(path) as fh:
        for line in fh:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
    return 0


def mem_available() -> int:
    return _proc_bytes('/proc/meminfo', 'MemAvailable')


def vm_hwm() -> int:
    """Return this process's peak resident memory (bytes)."""
    return _proc_bytes('/proc/self/status', 'VmHWM')


def make_checkpoint(out_dir: str, size: str, dtype_name: str, seed: int) -> dict:
    """Random π0 weights streamed to ``out_dir`` with the project's own companion files."""
    import numpy as np
    import torch
    from tqdm import tqdm
    from transformers import PI0ForConditionalGeneration

    from retain_ros.merging.dialects import lerobot_pi0_key
    from retain_ros.merging.dialects import LEROBOT_TIED_ALIAS
    from retain_ros.merging.safetensors_writer import StreamingWriter
    from retain_ros.policies.pi0 import NormStats
    from retain_ros.policies.pi0 import save_pi0_checkpoint
    from retain_ros.policies.pi0.configuration_pi0 import pi0_config_from_dict
    from retain_ros.policies.pi0.tokenizer_pi0 import save_byte_tokenizer

    dtype = getattr(torch, dtype_name)
    spec = pi0_config_from_dict(policy_config(size))
    with torch.device('meta'):
        model = PI0ForConditionalGeneration._from_config(spec.hf_config, dtype=dtype)
    params = sum(p.numel() for p in model.parameters())
    if size == 'full':
        assert_default_pi0(spec)
    stats = NormStats(np.zeros(14), np.ones(14), np.zeros(14), np.ones(14))
    save_pi0_checkpoint({}, out_dir, stats=stats, spec=spec)
    tok = os.path.join(out_dir, 'tokenizer')
    if not os.path.isdir(tok):
        save_byte_tokenizer(tok)
    layout, seen = [], set()
    for key, t in model.state_dict().items():
        name = lerobot_pi0_key(key)
        if name in seen:
            continue
        seen.add(name)
        layout.append((name, t.dtype, tuple(t.shape)))
    gen = torch.Generator().manual_seed(seed)
    path = os.path.join(out_dir, 'model.safetensors')
    writer = StreamingWriter(path + '.part', layout, dict(LEROBOT_TIED_ALIAS))
    chunk = 1 << 23
    with tqdm(total=writer.total_bytes, unit='B', unit_scale=True, desc=f'write {out_dir}',
              leave=False) as bar:
        for name, dt, shape in layout:
            numel = 1
            for s in shape:
                numel *= s
            for i in range(0, numel, chunk):
                n = min(chunk, numel - i)
                part = (torch.randn(n, generator=gen) * 0.02).to(dt) if dt.is_floating_point \
                    else torch.zeros(n, dtype=dt)
                writer.write_part(name, part)
                bar.update(part.numel() * part.element_size())
            writer.end_tensor(name)
    writer.close()
    os.replace(path + '.part', path)
    return {'params': params, 'bytes': writer.total_bytes, 'tensors': len(layout)}


# -- children ------------------------------------------------------------------------------------
def child_plan(pre: str, ft: str, dtype: str) -> dict:
    from retain_ros.merging.engine import open_sources
    from retain_ros.merging.memory import MemoryPlanError
    from retain_ros.merging.memory import plan_memory

    pre_s, fts = open_sources(pre, [ft])
    out = {}
    for mode in ('auto', 'device', 'host', 'disk'):
        try:
            plan = plan_memory(pre_s, fts, 'cpu', dtype, mode)
            out[mode] = {'fits': True, 'mode': plan.mode, 'dtype': str(plan.dtype),
                         'needs_GiB': {n.mode: round(n.host_bytes / GIB, 2) for n in plan.needs},
                         'describe': plan.describe()}
        except MemoryPlanError as exc:
            out[mode] = {'fits': False, 'refusal': str(exc)}
    return out


def child_startup(pre: str, ft: str, mode: str, dtype: str, changes: int) -> dict:
    import logging

    import torch

    from retain_ros.merging.engine import open_sources
    from retain_ros.merging.live import LiveMerger
    from retain_ros.merging.memory import MemoryPlanError
    from retain_ros.merging.memory import plan_memory
    from retain_ros.merging.spec import MergeSpec
    from retain_ros.policies.pi0.backbone_pi0 import build_pi0_module
    from retain_ros.policies.pi0.checkpoint_config_pi0 import load_pi0_config

    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s',
                        stream=sys.stderr)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    t0 = time.perf_counter()
    pre_s, fts = open_sources(pre, [ft])
    try:
        plan = plan_memory(pre_s, fts, 'cpu', dtype, mode)
    except MemoryPlanError as exc:
        return {'mode': mode, 'refused': str(exc), 'plan_s': time.perf_counter() - t0,
                'peak_rss_GiB': vm_hwm() / GIB}
    need = plan.need().host_bytes
    if need > mem_available() - SAFETY_BYTES:
        return {'mode': mode, 'skipped': f'needs {need / GIB:.2f} GiB > MemAvailable '
                f'{mem_available() / GIB:.2f} GiB - 4 GiB (shared machine)'}
    spec = load_pi0_config(ft)
    module = build_pi0_module(spec, torch.device('cpu'), plan.dtype)
    t_build = time.perf_counter()
    merger = LiveMerger(module, pre_s, fts, MergeSpec(alpha=0.5), plan=plan)
    t_merge = time.perf_counter()
    startup_rss = vm_hwm()
    times = []
    for i in range(changes):
        t = time.perf_counter()
        merger.apply(MergeSpec(alpha=0.2 + 0.1 * i))
        times.append(time.perf_counter() - t)
    return {'mode': plan.mode, 'dtype': str(plan.dtype), 'model_GiB': plan.sizes.model / GIB,
            'sources_GiB': plan.sizes.sources / GIB, 'build_s': t_build - t0,
            'merge_s': t_merge - t_build, 'startup_s': t_merge - t0,
            'first_merge_ms': merger.state.merge_ms, 'alpha_change_s': times,
            'startup_peak_rss_GiB': startup_rss / GIB, 'peak_rss_GiB': vm_hwm() / GIB,
            'need_GiB': need / GIB}


def child_floor(pre: str, ft: str) -> dict:
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    n = 512 << 20
    src = torch.ones(n // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float('inf')
    for _ in range(5):
        t = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t)
    del src, dst
    buf = bytearray(64 << 20)
    view = memoryview(buf)
    reads = []
    for _ in range(2):
        t = time.perf_counter()
        total = 0
        for d in (pre, ft):
            with open(os.path.join(d, 'model.safetensors'), 'rb', buffering=0) as fh:
                while True:
                    k = fh.readinto(buf)
                    if not k:
                        break
                    total += k
                    view[:1]
        reads.append(time.perf_counter() - t)
    return {'copy_GBps': 2 * n / best / 1e9, 'read_both_s': reads, 'read_bytes': total}


def child_node(pre: str, ft: str, changes: int, extra: str = '{}', headroom: str = '') -> dict:
    import logging

    import numpy as np
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rcl_interfaces.srv import SetParameters
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    from retain_ros.ros.conversions import rgb_to_image
    from retain_ros.ros.node_main import make_executor
    from retain_ros.ros.node_main import spin_in_background
    from retain_ros.ros.policy_node.node import PolicyNode

    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s',
                        stream=sys.stderr)
    if headroom:
        from retain_ros.merging import memory
        memory.HEADROOM_BYTES, memory.HEADROOM_FRACTION = int(float(headroom) * GIB), 0.0
    joints = [f'j{i}' for i in range(14)]
    ctx = Context()
    rclpy.init(context=ctx)
    probe = rclpy.create_node('full_size_probe', context=ctx)
    probe_ex = SingleThreadedExecutor(context=ctx)
    probe_ex.add_node(probe)
    spin_in_background(probe_ex, 'probe')
    chunks, diags = [], []
    probe.create_subscription(JointTrajectory, '/arm_controller/joint_trajectory',
                              lambda m: chunks.append((time.perf_counter(), m)), 10)
    probe.create_subscription(DiagnosticArray, '/diagnostics',
                              lambda m: diags.append((time.perf_counter(), m)), 10)
    image_pub = probe.create_publisher(Image, 'camera/image_raw', 10)
    joint_pub = probe.create_publisher(JointState, 'joint_states', 10)
    overrides = [Parameter(k, value=v) for k, v in {
        'pretrained_path': pre, 'finetuned_paths': [ft], 'camera_topics': ['camera/image_raw'],
        'joint_names': joints, 'device': 'cpu', 'alpha': 0.5, 'default_instruction':
        'pick up the cube', 'control_period': 5.0, 'replan_steps': 1,
        'max_observation_age': 3600.0, **json.loads(extra)}.items()]
    t0 = time.perf_counter()
    node = PolicyNode(context=ctx, parameter_overrides=overrides)   # autostart: configure+activate
    active_s = time.perf_counter() - t0
    active_rss = vm_hwm()
    executor = make_executor(context=ctx)
    executor.add_node(node)
    spin_in_background(executor, 'node')
    rgb = np.full((224, 224, 3), 128, np.uint8)
    rgb[:112, :, 0] = 255

    def feed() -> float:
        stamp = probe.get_clock().now().to_msg()
        img = rgb_to_image(rgb)
        img.header.stamp = stamp
        js = JointState()
        js.header.stamp = stamp
        js.name = joints
        js.position = [0.0] * len(joints)
        image_pub.publish(img)
        joint_pub.publish(js)
        return time.perf_counter()

    def wait_chunk(after: float, timeout: float = 1800.0):
        end = time.perf_counter() + timeout
        while time.perf_counter() < end:
            got = [(t, m) for t, m in chunks if t > after]
            if got:
                return got[0]
            time.sleep(0.05)
        raise RuntimeError(f'no chunk within {timeout} s')

    time.sleep(2.0)     # discovery
    sent = feed()
    t_chunk, msg = wait_chunk(sent)
    actions = np.array([list(p.positions) for p in msg.points])
    first = {'first_chunk_s': t_chunk - sent, 'points': len(msg.points),
             'joints': len(msg.joint_names), 'finite': bool(np.isfinite(actions).all())}
    client = probe.create_client(SetParameters, '/retain_policy/set_parameters')
    client.wait_for_service(timeout_sec=30)
    alpha_changes = []
    for i in range(changes):
        request = SetParameters.Request()
        request.parameters = [Parameter('alpha', value=0.2 + 0.1 * i).to_parameter_msg()]
        t = time.perf_counter()
        future = client.call_async(request)
        while not future.done():
            time.sleep(0.01)
        done = time.perf_counter()
        result = future.result().results[0]
        during = [m for tt, m in diags if t < tt < done]
        alpha_changes.append({
            'wall_s': done - t, 'ok': result.successful, 'reason': result.reason,
            'merge_ms': node.runtime.state.merge_ms,
            'diagnostics_during': len(during),
            'said': sorted({m.status[0].message[:60] for m in during if m.status})})
    state = node.runtime.state
    out = {'active_s': active_s, 'active_peak_rss_GiB': active_rss / GIB, **first,
           'alpha_changes': alpha_changes, 'merge_ms_last': state.merge_ms,
           'keep_sources': node.merger.keep_sources, 'peak_rss_GiB': vm_hwm() / GIB}
    executor.shutdown(timeout_sec=5)
    probe_ex.shutdown(timeout_sec=5)
    node.destroy_node()
    probe.destroy_node()
    ctx.try_shutdown()
    return out


def write_hf_copy(src_dir: str, out_dir: str, size: str) -> int:
    """``src_dir``'s weights in transformers' π0 layout (keys without LeRobot's ``model.``).

    The safetensors header is rewritten, the data region copied verbatim (offsets are relative to
    it), so the tensors are bit-identical. Returns the number of tensors.
    """
    from retain_ros.policies.pi0.configuration_pi0 import pi0_config_from_dict

    os.makedirs(out_dir, exist_ok=True)
    hf_config = pi0_config_from_dict(policy_config(size)).hf_config
    hf_config.architectures = ['PI0ForConditionalGeneration']
    hf_config.save_pretrained(out_dir)
    src = os.path.join(src_dir, 'model.safetensors')
    with open(src, 'rb') as fh:
        n = int.from_bytes(fh.read(8), 'little')
        header = json.loads(fh.read(n))
        renamed = {}
        for key, value in header.items():
            if key != '__metadata__' and not key.startswith('model.'):
                raise ValueError(f'{key}: not a LeRobot π0 key')
            renamed[key if key == '__metadata__' else key[len('model.'):]] = value
        blob = json.dumps(renamed, separators=(',', ':')).encode()
        blob += b' ' * (-len(blob) % 8)
        with open(os.path.join(out_dir, 'model.safetensors'), 'wb') as out:
            out.write(len(blob).to_bytes(8, 'little'))
            out.write(blob)
            shutil.copyfileobj(fh, out, 64 << 20)
    return len(renamed) - ('__metadata__' in renamed)


def compare_outputs(a_dir: str, b_dir: str, sample: int = 24) -> dict:
    """Tensor sets of two merge outputs and the max |a - b| on up to ``sample`` common tensors."""
    import glob

    from safetensors import safe_open

    def keys(d):
        out = {}
        for f in glob.glob(os.path.join(d, '*.safetensors')):
            with safe_open(f, 'pt') as fh:
                out.update({k: f for k in fh.keys()})
        return out

    a, b = keys(a_dir), keys(b_dir)
    common = sorted(set(a) & set(b))
    step = max(1, len(common) // sample)
    worst = 0.0
    for k in common[::step]:
        with safe_open(a[k], 'pt') as fa, safe_open(b[k], 'pt') as fb:
            worst = max(worst, float((fa.get_tensor(k).float() - fb.get_tensor(k).float())
                                     .abs().max()))
    return {'ours_tensors': len(a), 'mergekit_tensors': len(b), 'common': len(common),
            'only_ours': sorted(set(a) - set(b))[:5], 'only_mergekit': sorted(set(b) - set(a))[:5],
            'max_abs_diff_sampled': worst, 'sampled': len(common[::step])}


def run_mergekit(work: str, size: str, pre: str, ft: str, dtype: str) -> dict:
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    import merge_bench

    exe = os.path.join(merge_bench.MERGEKIT_VENV, 'bin', 'mergekit-yaml')
    if not os.path.exists(exe):
        return {'skipped': f'{exe} not installed (see merge_bench.py for its venv)'}
    hf_pre, hf_ft = os.path.join(work, 'hf_pre'), os.path.join(work, 'hf_ft')
    t = time.perf_counter()
    tensors = [write_hf_copy(pre, hf_pre, size), write_hf_copy(ft, hf_ft, size)]
    res = {'hf_copy_s': time.perf_counter() - t, 'tensors': tensors}
    ours_out, mk_out = os.path.join(work, 'merged_ours'), os.path.join(work, 'merged_mk')
    try:
        wall, rss_mib = merge_bench.ours(hf_pre, hf_ft, ours_out)
        res.update(ours_s=wall, ours_rss_GiB=rss_mib / 1024.0)
        wall, rss_mib = merge_bench.mergekit(hf_pre, hf_ft, mk_out, dtype, work)
        res.update(mergekit_s=wall, mergekit_rss_GiB=rss_mib / 1024.0)
        res['speedup'] = res['mergekit_s'] / res['ours_s']
        res.update(compare_outputs(ours_out, mk_out))
    except RuntimeError as exc:
        res['error'] = str(exc)[-3000:]
    finally:
        for d in (hf_pre, hf_ft, ours_out, mk_out):
            shutil.rmtree(d, ignore_errors=True)
    return res


def child_cli(argv) -> dict:
    from retain_ros.cli import main

    t = time.perf_counter()
    with open(os.devnull, 'w') as null:
        old = sys.stdout
        sys.stdout = null
        try:
            code = main(argv)
        finally:
            sys.stdout = old
    return {'argv': argv[0], 'code': code, 'wall_s': time.perf_counter() - t,
            'peak_rss_GiB': vm_hwm() / GIB}


def drop_caches() -> bool:
    """Empty the page cache (root only) so the next read of the checkpoints comes from disk."""
    try:
        os.sync()
        with open('/proc/sys/vm/drop_caches', 'w') as fh:
            fh.write('3\n')
        return True
    except OSError:
        return False


def run_child(args, env=None, cold: bool = False) -> dict:
    """Run this script as ``--child ...`` and return its JSON line (+ the child's ru_maxrss)."""
    cmd = [sys.executable, os.path.abspath(__file__), '--child'] + list(args)
    dropped = drop_caches() if cold else False
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    lines = [ln for ln in out.splitlines() if ln.startswith('{')]
    if proc.returncode != 0 or not lines:
        return {'child': args, 'error': f'exit {proc.returncode}', 'stderr': err[-4000:]}
    res = json.loads(lines[-1])
    res['child_wall_s'] = wall
    res['page_cache'] = 'dropped before' if dropped else 'as left by the previous step'
    res['log'] = [ln for ln in err.splitlines() if 'phase' in ln or 'memory plan' in ln
                  or 'merged in place' in ln or 'waited' in ln or 'warm-up' in ln
                  or 're-merged' in ln][:16]
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--size', choices=('full', 'mid', 'tiny'), default='tiny')
    ap.add_argument('--dtype', default='bfloat16')
    ap.add_argument('--work', default=os.path.join(ROOT, '.bench', 'full_size'))
    ap.add_argument('--only', default='plan,floor,startup,inspect,merge,node')
    ap.add_argument('--modes', default='auto,device,host,disk')
    ap.add_argument('--changes', type=int, default=3)
    ap.add_argument('--keep', action='store_true', help='keep the checkpoints')
    ap.add_argument('--out', default='')
    ap.add_argument('--node-params', default='{}',
                    help='extra node parameters for the node run, JSON (default: none, i.e. '
                    'the default memory settings)')
    ap.add_argument('--headroom', default='',
                    help='the memory plan\'s headroom in the node child, GiB (default: the '
                    'plan\'s own, 0.5 GiB + 10%%): device mode at full size fits a 24 GB machine '
                    'that runs nothing else only with a smaller one')
    ap.add_argument('--cold', action='store_true',
                    help='drop the page cache before floor, startup and node (root only)')
    ap.add_argument('--child', nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    if args.child:
        kind, rest = args.child[0], args.child[1:]
        if kind == 'plan':
            res = child_plan(*rest)
        elif kind == 'startup':
            res = child_startup(rest[0], rest[1], rest[2], rest[3], int(rest[4]))
        elif kind == 'floor':
            res = child_floor(*rest)
        elif kind == 'node':
            res = child_node(rest[0], rest[1], int(rest[2]), *rest[3:])
        else:
            res = child_cli(rest)
        print(json.dumps(res), flush=True)
        return 0
    work = os.path.join(args.work, args.size)
    pre, ft = os.path.join(work, 'pre'), os.path.join(work, 'ft')
    env = dict(os.environ, ROS_HOME=os.path.join(work, 'ros_home'))
    results = {'size': args.size, 'dtype': args.dtype, 'cpus': os.cpu_count(),
               'mem_available_GiB_at_start': mem_available() / GIB}
    t = time.perf_counter()
    if not os.path.isfile(os.path.join(ft, 'model.safetensors')):
        results['checkpoint'] = make_checkpoint(pre, args.size, args.dtype, 1)
        make_checkpoint(ft, args.size, args.dtype, 2)
        results['write_s'] = time.perf_counter() - t
    print(json.dumps(results), flush=True)
    only = args.only.split(',')
    try:
        if 'plan' in only:
            results['plan'] = run_child(['plan', pre, ft, args.dtype], env)
            print(json.dumps({'plan': results['plan']}), flush=True)
        if 'floor' in only:
            results['floor'] = run_child(['floor', pre, ft], env, args.cold)
            print(json.dumps({'floor': results['floor']}), flush=True)
        if 'startup' in only:
            results['startup'] = []
            for i, mode in enumerate(args.modes.split(',')):
                if i == 0:  # first start: no digest cache yet
                    shutil.rmtree(env['ROS_HOME'], ignore_errors=True)
                res = run_child(['startup', pre, ft, mode, args.dtype, str(args.changes)], env,
                                args.cold)
                res['digest_cache'] = 'cold' if i == 0 else 'warm'
                results['startup'].append(res)
                print(json.dumps(res), flush=True)
        if 'inspect' in only:
            results['inspect'] = run_child(['cli', 'inspect', pre, ft, '--json'], env)
            print(json.dumps({'inspect': results['inspect']}), flush=True)
        if 'merge' in only:
            out = os.path.join(work, 'merged')
            results['merge'] = run_child(['cli', 'merge', '--pretrained', pre, '--finetuned',
                                          ft, '--alpha', '0.5', '--out', out, '--no-progress',
                                          '-q'], env)
            shutil.rmtree(out, ignore_errors=True)
            print(json.dumps({'merge': results['merge']}), flush=True)
        if 'mergekit' in only:
            results['mergekit'] = run_mergekit(work, args.size, pre, ft, args.dtype)
            print(json.dumps({'mergekit': results['mergekit']}), flush=True)
        if 'node' in only:
            results['node'] = run_child(['node', pre, ft, str(args.changes), args.node_params,
                                         args.headroom], env, args.cold)
            print(json.dumps({'node': results['node']}), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.out:
        with open(args.out, 'w') as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
