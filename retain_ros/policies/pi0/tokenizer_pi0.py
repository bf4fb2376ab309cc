"""Byte-level tokenizer for the tiny π0, built offline with the ``tokenizers`` library.

Ids: ``0`` ``<pad>``, ``1`` ``<eos>``, ``2`` ``<bos>``, ``3`` ``<unk>``, then the 256 bytes
(``4 + byte``): :data:`BYTE_VOCAB_SIZE` = 260 text tokens. ``<image>`` is an extra special token
with id 260 = the vocabulary size, as in PaliGemma (image token id = text vocabulary size).
A real π0 uses the PaliGemma tokenizer from a local directory instead (same loading code).
"""
from __future__ import annotations

import logging
import os
from typing import Any

LOG = logging.getLogger(__name__)

PAD_TOKEN = '<pad>'
EOS_TOKEN = '<eos>'
BOS_TOKEN = '<bos>'
UNK_TOKEN = '<unk>'
IMAGE_TOKEN = '<image>'
SPECIAL_TOKENS = (PAD_TOKEN, EOS_TOKEN, BOS_TOKEN, UNK_TOKEN)
#: Text vocabulary of the byte tokenizer (specials + 256 bytes); ``<image>`` has this id.
BYTE_VOCAB_SIZE = len(SPECIAL_TOKENS) + 256
TOKENIZER_FILE = 'tokenizer.json'


def build_byte_tokenizer():
    """Build the byte-level tokenizer (no download).

    :return: a ``tokenizers.Tokenizer``.
    """
    from tokenizers import AddedToken
    from tokenizers import decoders
    from tokenizers import models
    from tokenizers import pre_tokenizers
    from tokenizers import Tokenizer

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    byte_chars = sorted(alphabet, key=_byte_of_char)
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for i, ch in enumerate(byte_chars):
        vocab[ch] = len(SPECIAL_TOKENS) + i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK_TOKEN))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in SPECIAL_TOKENS + (IMAGE_TOKEN,)])
    return tok


def _byte_of_char(ch: str) -> int:
    """Inverse of GPT-2's bytes-to-unicode map (the ByteLevel alphabet)."""
    code = ord(ch)
    if 33 <= code <= 126 or 161 <= code <= 172 or 174 <= code <= 255:
        return code
    # The other bytes are shifted to 256 + n in the order of the bytes they stand for.
    others = [b for b in range(256) if not (33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255)]
    return others[code - 256]


def save_byte_tokenizer(out_dir: str) -> str:
    """Write the byte tokenizer as ``<out_dir>/tokenizer.json`` (+ a small tokenizer_config).

    :param out_dir: target directory (created).
    :return: ``out_dir``.
    """
    return save_tokenizer(build_byte_tokenizer(), out_dir)


def build_word_tokenizer(words):
    """Build a word-level tokenizer over a fixed vocabulary (no download).

    Ids: the four specials of :data:`SPECIAL_TOKENS` (``0``..``3``), then ``words`` in order;
    ``<image>`` gets the next id (= the text vocabulary size, as in PaliGemma). Text is
    lower-cased and split on whitespace and punctuation; a word outside the vocabulary becomes
    ``<unk>``. One token per word makes a colour one token (as in PaliGemma's tokenizer), where
    the byte tokenizer spreads it over 3-6.

    :param words: the vocabulary (distinct, lower-case, no whitespace).
    :return: a ``tokenizers.Tokenizer``.
    :raises ValueError: duplicate, empty or non-lower-case words.
    """
    from tokenizers import AddedToken
    from tokenizers import decoders
    from tokenizers import models
    from tokenizers import normalizers
    from tokenizers import pre_tokenizers
    from tokenizers import Tokenizer

    words = list(words)
    bad = [w for w in words if not w or w != w.lower() or any(c.isspace() for c in w)
           or w in SPECIAL_TOKENS + (IMAGE_TOKEN,)]
    bad += sorted({w for w in words if words.count(w) > 1})
    if bad:
        raise ValueError(f'word vocabulary must be distinct non-empty lower-case words without '
                         f'whitespace; bad: {bad}')
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in words:
        vocab[word] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix='##', cleanup=True)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in SPECIAL_TOKENS + (IMAGE_TOKEN,)])
    return tok


def save_tokenizer(tokenizer, out_dir: str) -> str:
    """Write ``tokenizer`` (a ``tokenizers.Tokenizer``) as ``<out_dir>/tokenizer.json``.

    A small ``tokenizer_config.json`` goes beside it (loadable by transformers'
    ``PreTrainedTokenizerFast``).

    :return: ``out_dir``.
    """
    import json

    os.makedirs(out_dir, exist_ok=True)
    tokenizer.save(os.path.join(out_dir, TOKENIZER_FILE))
    meta = {'tokenizer_class': 'PreTrainedTokenizerFast', 'pad_token': PAD_TOKEN,
            'bos_token': BOS_TOKEN, 'eos_token': EOS_TOKEN, 'unk_token': UNK_TOKEN,
            'model_max_length': 1024, 'padding_side': 'right'}
    with open(os.path.join(out_dir, 'tokenizer_config.json'), 'w', encoding='utf-8') as f:
        json.dump(meta, f, indent=2)
    return out_dir


class TextTokenizer:
    """Thin wrapper over a ``tokenizers.Tokenizer`` loaded from a local directory.

    :param tokenizer: the ``tokenizers.Tokenizer``.
    :param path: where it came from (for logs).
    """

    def __init__(self, tokenizer: Any, path: str = ''):
        self._tok = tokenizer
        self.path = path
        self.bos_token_id = self._special_id((BOS_TOKEN, '<s>', '[BOS]'), 'bos')
        self.pad_token_id = self._special_id((PAD_TOKEN, '[PAD]'), 'pad')
        self.eos_token_id = self._special_id((EOS_TOKEN, '</s>', '[EOS]'), 'eos')

    def _special_id(self, names, what: str) -> int:
        for name in names:
            idx = self._tok.token_to_id(name)
            if idx is not None:
                return int(idx)
        raise ValueError(f'tokenizer {self.path or "(built-in)"} has no {what} token '
                         f'(looked for {list(names)})')

    def encode(self, text: str) -> list:
        """Token ids of ``text``, no special tokens added."""
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def token_to_id(self, token: str):
        """Id of a vocabulary entry, or None."""
        return self._tok.token_to_id(token)

    def decode(self, ids) -> str:
        """Text of ``ids`` (special tokens skipped)."""
        return self._tok.decode(list(ids), skip_special_tokens=True)

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return int(self._tok.get_vocab_size(with_added_tokens=True))


def load_tokenizer(path: str) -> TextTokenizer:
    """Load a tokenizer from a local directory (or a ``tokenizer.json`` file); never downloads.

    :param path: a directory holding ``tokenizer.json`` (the byte tokenizer of a tiny π0, or a
        PaliGemma tokenizer for a real π0), or the file itself.
    :return: the tokenizer.
    :raises FileNotFoundError: no ``tokenizer.json`` there.
    """
    from tokenizers import Tokenizer

    file = path
    if os.path.isdir(path):
        file = os.path.join(path, TOKENIZER_FILE)
    if not os.path.isfile(file):
        raise FileNotFoundError(
            f'no {TOKENIZER_FILE} at {path!r}: pass tokenizer_path = a local tokenizer directory '
            '(the PaliGemma tokenizer for a real π0; tiny π0 checkpoints ship it as tokenizer/)')
    LOG.info('tokenizer: %s', file)
    return TextTokenizer(Tokenizer.from_file(file), path=file)


#: Sub-directory of a checkpoint that holds its tokenizer (retain_ros / LeRobot layout).
TOKENIZER_DIR = 'tokenizer'


def _pipeline_tokenizer(checkpoint_dir: str) -> str:
    """Return the LeRobot pipeline's ``tokenizer_name`` if it is a local directory, else ''."""
    import json

    pre = os.path.join(checkpoint_dir, 'policy_preprocessor.json')
    if not os.path.isfile(pre):
        return ''
    with open(pre, 'r', encoding='utf-8') as f:
        steps = json.load(f).get('steps', [])
    for step in steps:
        name = (step.get('config') or {}).get('tokenizer_name') or ''
        if 'tokenizer' in step.get('registry_name', '') and name:
            for cand in (name, os.path.join(checkpoint_dir, name)):
                if os.path.isfile(os.path.join(cand, TOKENIZER_FILE)):
                    return cand
    return ''


def resolve_tokenizer_path(checkpoint_dir: str, tokenizer_path: str = '') -> str:
    """Where a checkpoint's tokenizer is; the choice is logged.

    Order: ``tokenizer_path`` (must exist); ``<ckpt>/tokenizer/``; ``<ckpt>/`` itself (a
    transformers ``save_pretrained`` directory with ``tokenizer.json`` at its root); the LeRobot
    pipeline's ``tokenizer_name`` when it names a local directory (absolute, or relative to the
    checkpoint). Nothing is downloaded.

    :raises FileNotFoundError: none found (the message tells the user to pass tokenizer_path).
    """
    if tokenizer_path:
        if not os.path.exists(tokenizer_path):
            raise FileNotFoundError(f'tokenizer_path {tokenizer_path!r} does not exist')
        LOG.info('tokenizer: %s (tokenizer_path)', tokenizer_path)
        return tokenizer_path
    base = checkpoint_dir if os.path.isdir(checkpoint_dir) else os.path.dirname(checkpoint_dir)
    local = os.path.join(base, TOKENIZER_DIR)
    if os.path.isdir(local):
        LOG.info('tokenizer: %s (<checkpoint>/%s)', local, TOKENIZER_DIR)
        return local
    if os.path.isfile(os.path.join(base, TOKENIZER_FILE)):
        LOG.info('tokenizer: %s (at the checkpoint root)', base)
        return base
    named = _pipeline_tokenizer(base)
    if named:
        LOG.info('tokenizer: %s (tokenizer_name of the LeRobot pipeline)', named)
        return named
    raise FileNotFoundError(
        f'no tokenizer: neither {local}/ nor {base}/{TOKENIZER_FILE} exists. Pass '
        'tokenizer_path = a local tokenizer directory (for a real π0 / π0.5 the PaliGemma '
        'tokenizer, e.g. a local copy of google/paligemma-3b-pt-224; nothing is downloaded at '
        'run time)')
