"""The demo's tiny pi0: its word tokenizer."""
from __future__ import annotations

from retain_ros.demo.model import build_tokenizer
from retain_ros.demo.model import WORD_VOCAB_SIZE


def test_word_tokenizer_one_token_per_word(tmp_path):
    tok = build_tokenizer(str(tmp_path / 'tok'))
    red = tok.encode('touch the red block')
    assert len(red) == 4 and red[:2] == tok.encode('Touch  THE') and tok.vocab_size == \
        WORD_VOCAB_SIZE + 1
    assert tok.encode('touch the magenta block')[2] == tok._tok.token_to_id('<unk>')
    assert tok.decode(red) == 'touch the red block'
