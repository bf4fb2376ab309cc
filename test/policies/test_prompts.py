"""Prompt rules of every family (``policies/prompts.py``) on the edge cases LeRobot's code has.

LeRobot 0.4.4's π0 and SmolVLA processors append ``"\\n"`` only when the task does not end with
one; its π0.5 processor strips the task and turns ``_`` and ``"\\n"`` into spaces. The checks run
through the real processors, so a tokenizer or a processor that re-adds a newline fails here.
"""
import numpy as np
import pytest

from retain_ros.policies.normalize import NormStats
from retain_ros.policies.pi0.configuration_pi0 import pi0_config_from_dict
from retain_ros.policies.pi0.configuration_pi0 import tiny_pi0_config
from retain_ros.policies.pi0.processor_pi0 import Pi0Processor
from retain_ros.policies.pi0.tokenizer_pi0 import load_tokenizer
from retain_ros.policies.pi0.tokenizer_pi0 import save_byte_tokenizer
from retain_ros.policies.pi05.processor_pi05 import pi05_prompt
from retain_ros.policies.prompts import newline_terminated

from helpers.smolvla_reference import REF_DIR  # noqa: E402


@pytest.mark.parametrize('instruction, prompt', [
    ('stack the cups', 'stack the cups\n'),
    ('stack the cups\n', 'stack the cups\n'),          # already terminated: no second newline
    ('stack the cups\n\n', 'stack the cups\n\n'),      # as given: LeRobot only checks the end
    ('stack the cups ', 'stack the cups \n'),          # trailing space kept
    ('  pick_up the cup', '  pick_up the cup\n'),      # leading space and underscore kept
    ('open\nthe drawer', 'open\nthe drawer\n'),        # inner newline kept
    ('', '\n'),                                        # empty instruction
    ('räume die Tasse weg', 'räume die Tasse weg\n'),  # non-ASCII untouched
    ('stack\r\n', 'stack\r\n'),                        # ends with '\n'
])
def test_newline_rule_of_pi0_and_smolvla(instruction, prompt):
    assert newline_terminated(instruction) == prompt


@pytest.mark.parametrize('instruction, task', [
    ('stack the cups\n', 'stack the cups'),
    ('  pick_up_the cup  ', 'pick up the cup'),
    ('open\nthe drawer', 'open the drawer'),
    ('', ''),
    ('räume_die Tasse', 'räume die Tasse'),
])
def test_pi05_prompt_rule(instruction, task):
    assert pi05_prompt(instruction, [3, 250, 0]) == f'Task: {task}, State: 3 250 0;\nAction: '


@pytest.fixture()
def pi0_processor(tmp_path):
    spec = pi0_config_from_dict(tiny_pi0_config(3, 2, camera_names=('a',), image_size=32,
                                                tokenizer_max_length=24))
    tok = load_tokenizer(save_byte_tokenizer(str(tmp_path / 'tok')))
    stats = NormStats(np.zeros(3), np.ones(3), np.zeros(2), np.ones(2), source='test')
    return Pi0Processor(spec, tok, stats)


def test_pi0_ids_of_a_terminated_instruction_equal_the_plain_ones(pi0_processor):
    plain = pi0_processor.text_ids('stack the cups')
    assert pi0_processor.text_ids('stack the cups\n') == plain
    assert plain[-1] == pi0_processor.tokenizer.encode('\n')[-1]
    assert pi0_processor.text_ids('stack the cups\n\n') == plain + [plain[-1]]
    assert pi0_processor.text_ids('') == [pi0_processor.tokenizer.bos_token_id] + \
        pi0_processor.tokenizer.encode('\n')


def test_smolvla_tokens_of_a_terminated_instruction_equal_the_plain_ones():
    from retain_ros.policies.smolvla import build_policy

    processor = build_policy(REF_DIR, device='cpu', dtype='float32').processor
    plain = processor.tokenize(['stack the cups'])
    ended = processor.tokenize(['stack the cups\n'])
    assert plain['lang_tokens'].tolist() == ended['lang_tokens'].tolist()
    assert plain['lang_masks'].tolist() == ended['lang_masks'].tolist()
