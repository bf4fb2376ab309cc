"""Presets, validation of malformed files (field named), checkpoint checks, joint binding."""
import copy
import re

import numpy as np
import pytest
import yaml

from retain_ros.embodiment import EmbodimentError
from retain_ros.embodiment import list_presets
from retain_ros.embodiment import load_embodiment
from retain_ros.embodiment import load_embodiment_data
from retain_ros.embodiment import RobotState

PI0 = ['base_0_rgb', 'left_wrist_0_rgb', 'right_wrist_0_rgb']
# preset -> (state dim, action dim, checkpoint camera slots)
SIZES = {
    'droid': (8, 8, ['observation.images.' + s for s in PI0]),
    'aloha': (14, 14, ['cam_high', 'cam_low', 'cam_left_wrist', 'cam_right_wrist']),
    'so101': (6, 6, ['front', 'wrist']),
    'servo_ee': (8, 7, ['image', 'wrist_image']),
}


def test_every_preset_is_listed_and_loads():
    assert {'joints', 'droid', 'aloha', 'so101', 'servo_ee'} <= set(list_presets())
    for name in list_presets():
        emb = load_embodiment(name)
        assert emb.name == name
        assert emb.describe()


@pytest.mark.parametrize('name', sorted(SIZES))
def test_presets_fit_their_checkpoints(name):
    emb = load_embodiment(name)
    state_dim, action_dim, slots = SIZES[name]
    emb.check_policy(state_dim, action_dim, slots)
    assert emb.state_dim == state_dim and emb.action_dim == action_dim
    with pytest.raises(EmbodimentError, match=rf"^{name}\.yaml: actions: slices give "
                       rf"{action_dim} value\(s\) \(.*\) but the checkpoint's action dim is 99"):
        emb.check_policy(state_dim, 99, slots)
    with pytest.raises(EmbodimentError, match="state dim is 1$"):
        emb.check_policy(1, action_dim, slots)
    with pytest.raises(EmbodimentError, match='has no camera'):
        emb.check_policy(state_dim, action_dim, slots + ['extra'])
    with pytest.raises(EmbodimentError, match='is not a camera slot of the checkpoint'):
        emb.check_policy(state_dim, action_dim, slots[1:])


def test_camera_map_pairs_checkpoint_slots_with_topics():
    slots = ['observation.images.' + s for s in PI0]
    assert load_embodiment('droid').camera_map(slots[::-1]) == [
        (slots[2], 'empty'), (slots[1], '/wrist_camera/image_raw'),
        (slots[0], '/exterior_camera/image_raw')]
    emb = load_embodiment('joints', {'camera_topics': ['/a', '/b']})
    assert emb.camera_map(['base', 'wrist']) == [('base', '/a'), ('wrist', '/b')]
    with pytest.raises(EmbodimentError, match='give one topic per slot'):
        emb.camera_map(['base'])
    with pytest.raises(EmbodimentError, match='has no camera'):
        load_embodiment('so101').camera_map(['front', 'top'])


def test_droid_message_names_the_slices():
    emb = load_embodiment('droid')
    with pytest.raises(EmbodimentError) as info:
        emb.check_policy(8, 7, PI0)
    assert 'slices give 8 value(s) (arm 7 + gripper 1)' in str(info.value)


def test_joints_preset_with_node_params_and_binding():
    emb = load_embodiment('joints')
    assert emb.needs_joint_names and emb.needs_camera_slots
    assert emb.outputs[0].type == 'joint_trajectory'
    emb.check_policy(4, 4, ['base'])          # only what is known
    with pytest.raises(EmbodimentError, match='camera topic'):
        emb.check_policy(4, 4, ['base', 'wrist'])
    bound = emb.bind_joint_names(['a', 'b', 'c', 'd']).bind_camera_slots(['base'])
    assert not bound.needs_joint_names and bound.cameras == [('base', 'camera/image_raw')]
    assert bound.joint_names == ['a', 'b', 'c', 'd'] and bound.outputs[0].names == \
        ('a', 'b', 'c', 'd')
    bound.check_policy(4, 4, ['base'])
    with pytest.raises(EmbodimentError, match='action dim is 5'):
        bound.check_policy(4, 5, ['base'])
    params = {'joint_names': ['a', 'b'], 'output_mode': 'stream', 'output_topic': '/fwd/commands',
              'joint_lower_limits': [-1.0, -2.0], 'joint_upper_limits': [1.0, 2.0],
              'max_joint_step': 0.1, 'joint_states_topic': '/js', 'camera_topics': ['/a', '/b']}
    emb = load_embodiment('joints', params)
    out = emb.outputs[0]
    assert out.type == 'position_stream' and out.topic == '/fwd/commands'
    assert out.limits.lower == (-1.0, -2.0) and out.limits.max_step == 0.1
    assert emb.state_sources[0].topic == '/js' and not emb.needs_joint_names
    cmd = emb.commands(np.array([[0.5, 0.6]]), RobotState({'a': 0.0, 'b': 0.0}), 0.1)
    assert list(cmd) == ['arm'] and cmd['arm'].names == ['a', 'b']
    # limits sized for 2 joints, bound to 3 names: refused when binding
    params['joint_names'] = []
    emb = load_embodiment('joints', params)
    with pytest.raises(EmbodimentError, match=r'outputs\[0\]\.limits\.lower: has 2 value'):
        emb.bind_joint_names(['a', 'b', 'c'])


def test_feature_names_are_compared_position_by_position():
    emb = load_embodiment('so101')
    names = ['shoulder_pan.pos', 'shoulder_lift.pos', 'elbow_flex.pos', 'wrist_flex.pos',
             'wrist_roll.pos', 'gripper.pos']
    emb.check_policy(6, 6, ['observation.images.front', 'observation.images.wrist'],
                     {'state': names, 'action': names})
    swapped = names[:]
    swapped[0], swapped[1] = swapped[1], swapped[0]
    with pytest.raises(EmbodimentError, match=r"actions\[0\]: joint 'shoulder_pan' but the "
                       r"checkpoint names this value 'shoulder_lift'"):
        emb.check_policy(6, 6, ['front', 'wrist'], {'state': names, 'action': swapped})


def _base():
    return yaml.safe_load(open(load_embodiment_path('droid'), encoding='utf-8'))


def load_embodiment_path(name):
    from retain_ros.embodiment.presets import find_embodiment_file
    return find_embodiment_file(name)


def _edit(path, value):
    """Set (or delete, value=...) the field at a dotted / indexed path of the droid file."""
    data = _base()
    keys = re.findall(r'[^.\[\]]+', path)
    node = data
    for k in keys[:-1]:
        node = node[int(k)] if k.isdigit() else node[k]
    last = int(keys[-1]) if keys[-1].isdigit() else keys[-1]
    if value is Ellipsis:
        del node[last]
    else:
        node[last] = value
    return data


@pytest.mark.parametrize('path, value, field, words', [
    ('actions[0].kind', 'joint_vel', 'actions[0].kind',
     "unknown kind 'joint_vel' (use one of joint_position, joint_delta"),
    ('outputs[0].type', 'effort_stream', 'outputs[0].type', "unknown output type"),
    ('actions[0].scale', ..., None, None),
    ('name', ..., 'name', 'missing (required)'),
    ('actions[0].joints', ['fr3_joint1', 'nope'], 'actions[0].joints', "unknown joint 'nope'"),
    ('actions[0].joints', ['fr3_joint1', 'fr3_joint1'], 'actions[0].joints', 'duplicate name'),
    ('actions[1].name', 'arm', 'actions[1].name', "duplicate slice name 'arm'"),
    ('outputs[1].name', 'arm', 'outputs[1].name', "duplicate output name 'arm'"),
    ('outputs[1].slices', ['grip'], 'outputs[1].slices[0]', "unknown slice 'grip'"),
    ('outputs[0].limits.lower', [0.0] * 6, 'outputs[0].limits.lower', 'has 6 value(s)'),
    ('outputs[0].limits.max_velocity', [1.0, 2.0], 'outputs[0].limits.max_velocity',
     'has 2 value(s) for 7 joint(s)'),
    ('outputs[0].limits.max_step', 0.1, 'outputs[0].limits.max_step', 'unknown field'),
    ('outputs[0].topic', '$arm_topic', 'outputs[0].topic', "unknown parameter '$arm_topic'"),
    ('outputs[0].rate', 50.0, 'outputs[0].rate', 'twist outputs only'),
    ('outputs[1].topic', '/joint_velocity_controller/commands', 'outputs[1].topic',
     'used by two outputs'),
    ('outputs[1].slices', ['arm'], 'outputs[1].slices[0]', 'cannot feed a gripper_action'),
    ('actions[1].actuator_range', [0.04, 0.04], 'actions[1].actuator_range', 'a != b'),
    ('actions[1].binarize', {'threshold': 0.5, 'band': 1}, 'actions[1].binarize.band',
     'unknown field'),
    ('actions[1].clip', [-1, 1], 'actions[1].clip', 'unknown field for kind gripper'),
    ('state[0].type', 'odometry', 'state[0].type', "unknown value 'odometry'"),
    ('cameras[2].slot', 'base_0_rgb', 'cameras[2].slot', "duplicate slot 'base_0_rgb'"),
    ('control_period', -1, 'control_period', 'must be > 0'),
    ('actions[0].ops', [{'scale': [1, 2]}], 'actions[0].ops[0].scale', 'has 2 value(s)'),
])
def test_malformed_files_name_the_field(path, value, field, words):
    data = _edit(path, value)
    if field is None:       # a removed optional field is fine
        load_embodiment_data(data, 'droid.yaml')
        return
    with pytest.raises(EmbodimentError) as info:
        load_embodiment_data(data, 'droid.yaml')
    message = str(info.value)
    assert message.startswith(f'droid.yaml: {field}: '), message
    assert words in message, message


def test_structural_errors():
    data = _base()
    data['actions'] = []
    with pytest.raises(EmbodimentError, match=r'^x\.yaml: actions: must be a non-empty list'):
        load_embodiment_data(data, 'x.yaml')
    twist = {'name': 't', 'cameras': [], 'state': [{'topic': 'js', 'type': 'joint_state',
                                                    'joints': ['a']}],
             'actions': [{'name': 'ee', 'kind': 'ee_delta', 'frame': 'base'}],
             'outputs': [{'name': 'ee', 'type': 'twist', 'topic': '/s', 'slices': ['ee'],
                          'rate': 10.0}]}
    with pytest.raises(EmbodimentError, match=r'outputs\[0\]\.rate: 10 Hz is too slow'):
        load_embodiment_data(copy.deepcopy(twist), 't.yaml')
    twist['outputs'][0].update(type='pose', rate=None)
    with pytest.raises(EmbodimentError, match='needs the end-effector pose in the state'):
        load_embodiment_data(twist, 't.yaml')
    with pytest.raises(EmbodimentError, match="no such file and no preset"):
        load_embodiment('no_such_robot')


def test_bad_yaml_file(tmp_path):
    path = tmp_path / 'broken.yaml'
    path.write_text('name: [unclosed\n')
    with pytest.raises(EmbodimentError, match=r'^broken\.yaml: not valid YAML'):
        load_embodiment(str(path))
