"""Demo training: quick run writes loadable LeRobot-layout checkpoints; caching; paths."""
from __future__ import annotations

from dataclasses import asdict
import json
import os

import numpy as np
import pytest
import torch

from retain_ros.demo import train
from retain_ros.demo.data import generate_demos
from retain_ros.demo.paths import demo_checkpoints
from retain_ros.demo.paths import demo_dir
from retain_ros.demo.paths import DemoCheckpointsMissing
from retain_ros.demo.rollout import run_episode
from retain_ros.demo.rollout import load_pair
from retain_ros.demo.rollout import merge_spec
from retain_ros.sim import SimWorld


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('demo'))
    torch.set_num_threads(2)
    assert train.main(['--quick', '--dir', root, '--no-progress']) == 0
    return root


def _fresh_policy(settings, data, tmp_path):
    """A freshly initialised tiny pi0 for ``settings`` with ``data``'s statistics, and the
    data as model tensors."""
    from retain_ros.policies.pi0 import Pi0Policy

    tok = train.build_tokenizer(settings, str(tmp_path / 'tok'))
    policy = Pi0Policy.from_spec(train.build_spec(settings), tok,
                                 train.compute_stats(data, 'test'), init_weights=True,
                                 init_seed=0, noise_seed=0)
    return policy, train.TensorDataset(data, policy.processor)


def test_paths(tmp_path, monkeypatch):
    monkeypatch.setenv('RETAIN_ROS_DEMO_DIR', str(tmp_path / 'x'))
    assert demo_dir() == str(tmp_path / 'x')
    with pytest.raises(DemoCheckpointsMissing, match='retain-ros demo-train'):
        demo_checkpoints()
    monkeypatch.delenv('RETAIN_ROS_DEMO_DIR')
    assert demo_dir().endswith(os.path.join('.cache', 'retain_ros', 'demo'))


def test_checkpoints_in_lerobot_layout_and_loadable(trained, monkeypatch):
    from retain_ros.policies.pi0 import Pi0Policy

    monkeypatch.setenv('RETAIN_ROS_DEMO_DIR', trained)
    generalist, finetuned = demo_checkpoints()
    for path in (generalist, finetuned):
        names = set(os.listdir(path))
        assert {'config.json', 'model.safetensors', 'tokenizer'} <= names
        assert any(n.endswith('normalizer_processor.safetensors') for n in names)
        with open(os.path.join(path, 'config.json')) as f:
            assert json.load(f)['type'] == 'pi0'
    policy = Pi0Policy.build(generalist, stats_dir=finetuned)
    policy.load_weights(finetuned)
    world = SimWorld()
    result = run_episode(policy, world, 'reach_yellow', 'new_ood', 0, steps=6, replan_steps=3)
    assert result['chunks'] == 2 and result['steps'] == 6
    settings = train.quick_settings()
    gen_info, ft_info = train.read_info(generalist), train.read_info(finetuned)
    assert gen_info['hash'] == train.generalist_digest(settings)
    assert gen_info['weights_sha256'] == train.file_sha256(
        os.path.join(generalist, 'model.safetensors'))
    assert ft_info['generalist_weights_sha256'] == gen_info['weights_sha256']
    assert ft_info['hash'] == train.finetune_digest(settings, gen_info['weights_sha256'])
    # the demonstrations' text is part of the cache key: another task, another finetune
    assert ft_info['hash'] != train.finetune_digest(settings, gen_info['weights_sha256'],
                                                    'reach_cyan')
    assert [c['step'] for c in gen_info['curve']][-1] == settings.generalist_steps
    assert 'val_success' in gen_info['curve'][-1]


def test_cache_reuses_and_retrains_on_change(trained):
    gen_weights = os.path.join(trained, 'generalist', 'model.safetensors')
    weights = os.path.join(trained, 'finetuned', 'model.safetensors')
    gen_before, before = os.stat(gen_weights).st_mtime_ns, os.stat(weights).st_mtime_ns
    settings = train.quick_settings()
    train.ensure_demo_checkpoints(trained, settings, progress=False)
    assert os.stat(weights).st_mtime_ns == before
    assert train.main(['--quick', '--dir', trained, '--no-progress']) == 0
    assert os.stat(weights).st_mtime_ns == before
    # a finetune setting retrains the finetune only
    settings.finetune_steps += 1
    train.ensure_demo_checkpoints(trained, settings, progress=False)
    assert os.stat(weights).st_mtime_ns != before
    assert os.stat(gen_weights).st_mtime_ns == gen_before
    # a generalist setting retrains both
    settings.generalist_steps += 1
    train.ensure_demo_checkpoints(trained, settings, progress=False)
    assert os.stat(gen_weights).st_mtime_ns != gen_before
    assert train.read_info(os.path.join(trained, 'generalist'))['hash'] == \
        train.generalist_digest(settings)


def test_default_settings_use_the_shipped_generalist(tmp_path):
    path, origin = train.ensure_generalist(str(tmp_path), train.TrainSettings(),
                                           progress=False)
    assert origin == 'shipped'
    assert train.read_info(path)['weights_sha256'] == \
        train.read_info(train.SHIPPED_GENERALIST)['weights_sha256']
    assert train.ensure_generalist(str(tmp_path), train.TrainSettings())[1] == 'shipped'


def test_word_tokenizer_one_token_per_word(tmp_path):
    tok = train.build_tokenizer(train.TrainSettings(), str(tmp_path / 'tok'))
    red = tok.encode('touch the red block')
    assert len(red) == 4 and red[:2] == tok.encode('Touch  THE') and tok.vocab_size == \
        train.WORD_VOCAB_SIZE + 1
    assert tok.encode('touch the magenta block')[2] == tok._tok.token_to_id('<unk>')
    assert tok.decode(red) == 'touch the red block'


def test_demos_are_seeded():
    a = generate_demos(['reach_red'], 'generalist', 1, horizon=4, dt=0.1, steps=3)
    b = generate_demos(['reach_red'], 'generalist', 1, horizon=4, dt=0.1, steps=3)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.actions, b.actions)
    assert a.actions.shape == (3, 4, 3) and a.instructions == ['touch the red block']


def test_offline_sweep_merges_like_the_node(trained):
    """The offline harness uses the merging library's LiveMerger on the checkpoints on disk."""
    policy, merger = load_pair(os.path.join(trained, 'generalist'),
                               os.path.join(trained, 'finetuned'))
    groups = merger.groups
    pre_source, (ft_source,) = merger.sources
    pre = {k: pre_source.get(k) for k in groups}
    ft = {k: ft_source.get(k) for k in groups}
    assert {'vision', 'language', 'action'} <= set(groups.values())
    live = policy.module.state_dict()
    changed = [k for k in pre if not torch.equal(pre[k], ft[k])]
    assert changed, 'the finetune changed nothing'
    for k in changed:
        torch.testing.assert_close(live[k], pre[k])
    merger.apply(merge_spec({'alpha': 1.0, 'language': 0.5}))
    live = policy.module.state_dict()
    for k in changed:
        want = torch.lerp(pre[k].float(), ft[k].float(), 0.5) if groups[k] == 'language' \
            else ft[k]
        torch.testing.assert_close(live[k], want)
    rows = train.offline_sweep(trained, 1, train.quick_settings(), progress=False,
                               sweep=({'alpha': 0.0}, {'alpha': 1.0, 'language': 0.5}))
    assert [(r['setting'], r['split'], r['episodes']) for r in rows][:3] == [
        ({'alpha': 0.0}, 'new_id', 1), ({'alpha': 0.0}, 'new_ood', 1),
        ({'alpha': 0.0}, 'generalist', 1)]
    assert 'alpha=1,language=0.5' in train.format_sweep(rows)


def test_default_sweep_has_the_demo_language_merge():
    assert {'alpha': 1.0, 'language': 0.5} in train.DEFAULT_SWEEP
    assert {'alpha': 0.0} in train.DEFAULT_SWEEP and {'alpha': 1.0} in train.DEFAULT_SWEEP


def test_set_overrides_any_setting():
    args = train._parser().parse_args(['--quick', '--set', 'generalist_lr=0.002',
                                       '--set', 'model-image-size=32'])
    settings = train.settings_from_args(args)
    assert settings.generalist_lr == 0.002 and settings.model_image_size == 32
    assert train.build_spec(settings).image_seq_length == 16
    settings.model_patch = 4
    assert train.build_spec(settings).image_seq_length == 64


def test_added_settings_stay_out_of_the_hashes_at_their_neutral_values():
    """An option added after a generalist was made leaves the hashes alone while it has the
    value that reproduces what was made before it existed; once used, it enters them."""
    settings = train.TrainSettings()
    assert set(train.ADDED_SETTINGS) <= set(asdict(settings))
    neutral = {k for k, v in train.ADDED_SETTINGS.items() if getattr(settings, k) == v}
    used = set(train.ADDED_SETTINGS) - neutral
    assert 'model_patch' in neutral and 'generalist_grounding_objective' in used
    hashed = train.generalist_settings(settings)
    assert not neutral & set(hashed) and used <= set(hashed)
    base, whole = train.generalist_digest(settings), settings.digest()
    settings.model_patch = 4
    assert train.generalist_digest(settings) != base and settings.digest() != whole
    assert train.generalist_settings(settings)['model_patch'] == 4
    with pytest.raises(SystemExit):
        train.settings_from_args(train._parser().parse_args(['--set', 'nope=1']))


def test_all_targets_demonstrates_every_block_of_a_scene():
    one = generate_demos(['reach_red', 'reach_blue'], 'generalist', 2, horizon=4, dt=0.1,
                         steps=2)
    every = generate_demos(['reach_red', 'reach_blue'], 'generalist', 2, horizon=4, dt=0.1,
                           steps=2, all_targets=True)
    assert one.episodes == 4 and one.images.shape[1:] == (96, 96, 3)
    assert every.episodes > one.episodes and len(every) == 2 * every.episodes
    # a scene demonstrated for another instruction starts from the same image and state
    for start in range(0, len(every), 2):
        same = [s for s in range(0, len(every), 2)
                if np.array_equal(every.images[s], every.images[start])]
        if len(same) > 1:
            assert len({int(every.instruction_index[s]) for s in same}) == len(same)
            np.testing.assert_array_equal(every.states[same[0]], every.states[same[1]])
            break
    else:
        raise AssertionError('no scene was demonstrated twice')


def test_continual_chain(trained):
    """merge -> finetune the merge on the second new task -> merge again, evaluated on all
    five splits (quick settings: the numbers mean nothing, the plumbing does)."""
    from retain_ros.policies.pi0.modeling_pi0 import read_pi0_state_dict

    assert train.main(['--quick', '--dir', trained, '--continual', '0.5', '--eval', '1',
                       '--no-progress']) == 0
    with open(os.path.join(trained, 'continual.json')) as f:
        rows = json.load(f)
    assert [r['setting']['alpha'] for r in rows[::5]] == [0.0, 0.5, 1.0]
    assert {r['split'] for r in rows} == {'generalist', 'new_id', 'new_ood', 'second_id',
                                          'second_ood'}
    assert all(r['episodes'] == 1 for r in rows)
    pre, ft, merged = (read_pi0_state_dict(os.path.join(trained, n, 'model.safetensors'))
                       for n in ('generalist', 'finetuned', train.MERGED_1))
    key = next(k for k in pre if pre[k].is_floating_point() and not torch.equal(pre[k], ft[k]))
    torch.testing.assert_close(merged[key], 0.5 * pre[key] + 0.5 * ft[key])
    info = train.read_info(os.path.join(trained, train.FINETUNED_2))
    assert info['task'] == 'reach_cyan'
    with pytest.raises(SystemExit, match='alpha must be in'):
        train.main(['--quick', '--dir', trained, '--continual', '1.5', '--no-progress'])


def test_second_task_scenes():
    world = SimWorld()
    info = world.reset('touch the cyan block', 'second_id', 3)
    assert info.task == 'reach_cyan' and 'pos:narrow' in info.variation_tag
    assert 'pos:broad' in world.reset('reach_cyan', 'second_ood', 3).variation_tag
    with pytest.raises(ValueError, match='splits'):
        world.reset('reach_cyan', 'new_id', 0)


def test_grounding_bins_follow_the_camera_view():
    from retain_ros.sim import world

    corners = np.array([[world.VIEW_X[0], world.VIEW_Y[1]], [world.VIEW_X[1] - 1e-6,
                                                             world.VIEW_Y[0] + 1e-6],
                        [0.0, 0.5]])
    bins = train.grounding_bins(corners).tolist()
    n = train.GROUNDING_BINS
    assert bins[0] == [0, 0] and bins[1] == [n - 1, n - 1]
    assert bins[2] == [n // 2, int((world.VIEW_Y[1] - 0.5) / 1.2 * n)]
    # the block centre the expert demonstrates is the one recorded
    data = generate_demos(['reach_red'], 'generalist', 1, horizon=4, dt=0.1, steps=2)
    w = SimWorld(image_size=96)
    w.reset('reach_red', 'generalist', 100_000)    # the first training seed
    assert np.allclose(data.targets[0], w.target_position())


def test_grounding_cotraining_learns_locations(tmp_path):
    """The grounding loss reads the tied embedding at the last text token and trains: on one
    fixed batch it falls well below chance, and the flow loss is the model's own."""
    settings = train.quick_settings()
    data = generate_demos(['reach_red', 'reach_blue'], 'generalist', 4, horizon=10, dt=0.1,
                          steps=2, all_targets=True)
    policy, dataset = _fresh_policy(settings, data, tmp_path)
    tok = policy.processor.tokenizer
    batch = dataset.batch(torch.arange(len(dataset)))
    x_ids, y_ids = train.location_token_ids(tok)
    assert len(set(x_ids.tolist()) | set(y_ids.tolist())) == 2 * train.GROUNDING_BINS
    torch.manual_seed(0)
    first = float(train.grounding_loss(policy.module, batch, x_ids, y_ids)[0].detach())
    assert abs(first - 2 * np.log(train.GROUNDING_BINS)) < 1.5
    parts = {}
    loss_fn = train.cotraining_loss(1.0, tok, parts)
    opt = torch.optim.Adam(policy.module.parameters(), lr=3e-3)
    for _ in range(60):
        loss = loss_fn(policy.module, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert parts['grounding'] < 0.5 * first
    total = float(loss.detach())
    assert np.isfinite(parts['flow']) and abs(total - parts['flow'] - parts['grounding']) < 1e-4
    with pytest.raises(ValueError, match='location token'):
        train.location_token_ids(train.build_tokenizer(
            train.TrainSettings(tokenizer='byte'), str(tmp_path / 'byte')))


def test_start_spread_varies_the_start_pose_only():
    from retain_ros.sim.world import HOME

    near = generate_demos(['reach_red'], 'generalist', 3, horizon=4, dt=0.1, steps=2)
    wide = generate_demos(['reach_red'], 'generalist', 3, horizon=4, dt=0.1, steps=2,
                          start_spread=1.0)
    assert np.abs(near.states[::2] - HOME).max() <= 0.1 + 1e-6
    assert np.abs(wide.states[::2] - HOME).max() > 0.3
    np.testing.assert_array_equal(near.targets, wide.targets)   # same scenes
    again = generate_demos(['reach_red'], 'generalist', 3, horizon=4, dt=0.1, steps=2,
                           start_spread=1.0)
    np.testing.assert_array_equal(wide.states, again.states)


def test_place_arm_keeps_the_scene():
    w = SimWorld(image_size=32)
    w.reset('reach_red', 'generalist', 4)
    blocks = w.blocks
    w.place_arm([0.5, 1.0, 9.0])
    assert w.joint_positions().tolist() == [0.5, 1.0, 2.8]     # clipped to the limit
    assert w.joint_targets().tolist() == w.joint_positions().tolist()
    assert w.blocks == blocks and not w.success()
    with pytest.raises(ValueError, match='finite'):
        w.place_arm([0.0, float('nan'), 0.0])


def test_samples_per_demo_spreads_samples_over_scenes():
    every = generate_demos(['reach_red'], 'generalist', 3, horizon=4, dt=0.1, steps=6)
    two = generate_demos(['reach_red'], 'generalist', 3, horizon=4, dt=0.1, steps=6,
                         samples_per_demo=2)
    assert len(every) == 18 and len(two) == 6 and two.episodes == every.episodes == 3
    # each kept sample is one of that demonstration's samples (same rollout, fewer records)
    for i in range(len(two)):
        demo = i // 2
        rows = every.states[6 * demo:6 * demo + 6]
        assert any(np.array_equal(two.states[i], row) for row in rows)
    again = generate_demos(['reach_red'], 'generalist', 3, horizon=4, dt=0.1, steps=6,
                           samples_per_demo=2)
    np.testing.assert_array_equal(two.states, again.states)


def test_start_on_block_and_motion_only():
    from retain_ros.sim.world import end_effector

    def distances(data):
        return np.array([np.linalg.norm(end_effector(q) - t)
                         for q, t in zip(data.states, data.targets)])

    common = dict(horizon=4, dt=0.1, steps=30, all_targets=True, start_spread=1.0)
    tasks = ['reach_red', 'reach_blue']
    on_block = generate_demos(tasks, 'generalist', 6, start_on_block=1.0, samples_per_demo=1,
                              **common)
    spread = generate_demos(tasks, 'generalist', 6, samples_per_demo=1, **common)
    # demonstrations start on another block of the scene (gripper far from the target)
    starts_on = generate_demos(tasks, 'generalist', 6, start_on_block=1.0, **common)
    first = distances(starts_on)[::30]
    assert np.mean(first > 0.3) > 0.8
    assert not np.array_equal(on_block.states, spread.states)
    # motion only: the samples come from the way to the block, not from holding on it
    every = generate_demos(tasks, 'generalist', 6, **common)
    moving = generate_demos(tasks, 'generalist', 6, motion_only=True, **common)
    assert len(moving) < len(every)
    assert np.mean(distances(moving) < 0.05) < 0.5 * np.mean(distances(every) < 0.05)


def test_pretrain_vlm_learns_grounding(tmp_path):
    """Stage 1 of the generalist: grounding alone, its accuracy measured on the checks."""
    settings = train.quick_settings()
    settings.generalist_grounding_steps = 150
    settings.generalist_grounding_lr = 3e-3
    data = generate_demos(['reach_red', 'reach_blue'], 'generalist', 4, horizon=10, dt=0.1,
                          steps=1, all_targets=True)
    policy, dataset = _fresh_policy(settings, data, tmp_path)
    before = train.grounding_accuracy(policy.module, dataset, policy.processor.tokenizer)
    torch.manual_seed(0)
    curve = train.pretrain_vlm(policy, dataset, settings, dataset, check_every=100,
                               progress=False)
    assert [c['step'] for c in curve] == [100, 150] and 'val_grounding' in curve[0]
    assert curve[-1]['val_grounding'] > max(0.6, before + 0.3)
    assert curve[-1]['grounding_loss'] < 2 * np.log(train.GROUNDING_BINS)


def test_pretrain_vlm_learns_pointing(tmp_path):
    """The pointing objective marks the image token that holds the instructed block, at a
    layer the action expert reads; its accuracy is the share of samples marked right."""
    settings = train.quick_settings()
    settings.generalist_grounding_steps = 150
    settings.generalist_grounding_lr = 3e-3
    settings.generalist_grounding_objective = 'point'
    settings.generalist_grounding_layer = 1
    data = generate_demos(['reach_red', 'reach_blue'], 'generalist', 4, horizon=10, dt=0.1,
                          steps=1, all_targets=True)
    policy, dataset = _fresh_policy(settings, data, tmp_path)
    grid = train._image_grid(policy.module)
    bins = torch.tensor([[0, 0], [train.GROUNDING_BINS - 1, 0], [0, train.GROUNDING_BINS - 1]])
    assert train.pointing_labels(policy.module, bins).tolist() == [0, grid - 1, grid * (grid - 1)]
    accuracy = train.grounding_objective(settings, policy.processor.tokenizer)[1]
    before = accuracy(policy.module, dataset)
    torch.manual_seed(0)
    curve = train.pretrain_vlm(policy, dataset, settings, dataset, check_every=150,
                               progress=False)
    assert curve[-1]['val_grounding'] > max(0.6, before + 0.3)
    assert curve[-1]['grounding_loss'] < np.log(grid * grid)
    settings.generalist_grounding_objective = 'segment'
    with pytest.raises(ValueError, match='location or point'):
        train.grounding_objective(settings, policy.processor.tokenizer)


def test_cotraining_with_pointing_is_refused_before_any_work(tmp_path, monkeypatch):
    """Grounding co-training reads the location objective: with pointing it is refused before
    the demonstrations are made, not after the VLM stage."""
    settings = train.quick_settings()
    settings.generalist_grounding_weight = 0.5
    monkeypatch.setattr(train, 'generalist_data', lambda *a, **k: pytest.fail('data made'))
    with pytest.raises(ValueError, match='location objective'):
        train.train_generalist(settings, str(tmp_path / 'g'), progress=False)
    assert not (tmp_path / 'g').exists()


def test_conditioning_probe_sees_what_the_policy_uses(tmp_path, capsys):
    """The probe's shuffled-input losses: a policy trained on a few scenes uses its inputs
    (memorised); the quick-trained one barely changes. The CLI prints one line per checkpoint."""
    from retain_ros.policies.pi0 import save_pi0_checkpoint
    from retain_ros.sim.tasks import GENERALIST_TASKS

    data = generate_demos(GENERALIST_TASKS, 'generalist', 6, horizon=10, dt=0.1,
                          steps=30, all_targets=True, start_spread=1.0, samples_per_demo=1,
                          motion_only=True, seed_offset=train.VALIDATION_SEED_OFFSET)
    policy, dataset = _fresh_policy(train.quick_settings(), data, tmp_path)
    train.train_model(policy.module, dataset, 300, 3e-3, 16, 0, 'memorise', False)
    save_pi0_checkpoint(policy, str(tmp_path / 'ckpt'), policy.processor.stats)
    # the default settings' 30-step demonstrations, as the data above
    probe = train.conditioning_probe(str(tmp_path / 'ckpt'), train.TrainSettings(),
                                     scenes_per_task=6)
    assert set(probe) == {'samples', 'loss', 'shuffled_instruction', 'shuffled_image',
                          'shuffled_state'}
    assert probe['samples'] == len(dataset)
    # the probe runs on the same (validation) scenes it memorised: every input matters
    assert probe['shuffled_state'] > 1.5 * probe['loss']
    assert max(probe['shuffled_image'], probe['shuffled_instruction']) > 1.2 * probe['loss']
    assert train.main(['--quick', '--probe', str(tmp_path / 'ckpt'), '--no-progress']) == 0
    assert 'instruction shuffled x' in capsys.readouterr().out


def test_freeze_vlm_trains_the_action_expert_only(tmp_path):
    from retain_ros.policies.pi0.modeling_pi0 import read_pi0_state_dict

    runs = {'init': dict(generalist_lr=0.0), 'frozen': dict(generalist_freeze_vlm=True),
            'free': dict(generalist_freeze_vlm=False)}
    weights = {}
    for name, changes in runs.items():
        settings = train.quick_settings()
        settings.generalist_grounding_steps = 0
        settings.generalist_steps = 4
        for key, value in changes.items():
            setattr(settings, key, value)
        train.train_generalist(settings, str(tmp_path / name), progress=False,
                               validation_episodes=1)
        weights[name] = read_pi0_state_dict(str(tmp_path / name / 'model.safetensors'))

    def changed(name):
        return {k for k, v in weights[name].items() if not torch.equal(v, weights['init'][k])}

    vlm = {k for k in weights['init'] if k.startswith('model.vlm.')}
    assert vlm and changed('frozen') and not changed('frozen') & vlm
    assert changed('free') & vlm
