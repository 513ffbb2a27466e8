"""The byte tokenizer of a live-trained model (model/training/live.py): each UTF-8 byte is one token, its id the
byte's value, and one more token, <|endoftext|> (256), separates documents, as in GPT-2's training stream.

Written as a tokenizer.json (byte-level BPE with no merges), so a live model's checkpoint is read back by
model/tokenizers/hf_tokenizer.py here and by Hugging Face tokenizers anywhere.
"""

from __future__ import annotations

import json

import numpy as np

from model.tokenizers.tokenizer import byte_level_alphabet

EOS = "<|endoftext|>"
EOS_ID = 256
VOCAB_SIZE = 257


def tokenizer_json() -> str:
    vocab = {char: byte for char, byte in byte_level_alphabet().items()}
    spec = {
        "version": "1.0",
        "added_tokens": [{"id": EOS_ID, "content": EOS, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": dict(sorted(vocab.items(), key=lambda kv: kv[1])), "merges": []},
    }
    return json.dumps(spec, ensure_ascii=False, indent=1)


def encode_documents(documents: list[str]) -> np.ndarray:
    """Each document's UTF-8 bytes after an <|endoftext|>, in one stream of ids (uint16)."""
    parts = []
    for doc in documents:
        parts.append(np.array([EOS_ID], dtype=np.uint16))
        parts.append(np.frombuffer(doc.encode("utf-8"), dtype=np.uint8).astype(np.uint16))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)
