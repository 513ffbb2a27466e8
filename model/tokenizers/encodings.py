"""The vocabularies GPT-2's is compared with: cl100k_base (GPT-3.5/GPT-4) and o200k_base (GPT-4o), and
the loaded model's own when it is not GPT-2's.

Their rank files are vendored in model/assets/ (model/assets/README.md says how
they were made) and must byte-match OpenAI's: tiktoken's own recipe for each
encoding (tiktoken_ext.openai_public) supplies the sha256, the regex and the
special tokens; only the download is replaced by a read of our copy.
Building one takes about a second, so it happens on first use.
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import tiktoken
from tiktoken_ext import openai_public

from model.tokenizers.hf_tokenizer import HFTokenizer
from model.tokenizers.tokenizer import ASSETS, Token, Tokenizer, gpt2_tokenizer, read_checked

VENDORED = ("cl100k_base", "o200k_base")
NAMES = ("gpt2", *VENDORED)
_recipe_lock = threading.Lock()


def read_ranks(path: Path, sha256: str) -> dict[bytes, int]:
    """A .tiktoken file: one "base64-token rank" pair a line."""
    lines = read_checked(path, sha256).splitlines()
    return {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in lines if line)}


def build_encoding(name: str, assets: Path = ASSETS) -> tiktoken.Encoding:
    """tiktoken's recipe for `name`, its ranks read from assets/<name>.tiktoken."""
    if name not in VENDORED:  # any other recipe would download its files
        raise ValueError(f"{name!r} is not vendored; the encodings built here are {', '.join(VENDORED)}.")

    def load_local(url: str, expected_hash: str) -> dict[bytes, int]:
        return read_ranks(assets / url.rsplit("/", 1)[-1], expected_hash)

    # the recipe calls the module's load_tiktoken_bpe, which would download; swap it for the call
    with _recipe_lock:
        download = openai_public.load_tiktoken_bpe
        openai_public.load_tiktoken_bpe = load_local
        try:
            recipe = openai_public.ENCODING_CONSTRUCTORS[name]()
        finally:
            openai_public.load_tiktoken_bpe = download
    return tiktoken.Encoding(**recipe)


@lru_cache(maxsize=None)
def tokenizer(name: str) -> Tokenizer:
    if name not in NAMES:
        raise ValueError(f"Unknown encoding {name!r}; the ones available are {', '.join(NAMES)}.")
    return gpt2_tokenizer() if name == "gpt2" else Tokenizer(build_encoding(name))


@dataclass(frozen=True)
class Comparison:
    name: str
    vocab_size: int
    tokens: list[Token]

    @property
    def count(self) -> int:
        return len(self.tokens)


def compare(text: str, own: HFTokenizer | None = None) -> list[Comparison]:
    """The text as each encoding splits it: the loaded model's own tokenizer first when given, then GPT-2's."""
    first = [Comparison(own.name, own.vocab_size, own.tokens(text))] if own is not None else []
    return first + [Comparison(name, tokenizer(name).vocab_size, tokenizer(name).tokens(text)) for name in NAMES]
