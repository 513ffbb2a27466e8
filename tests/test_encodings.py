"""The comparison vocabularies: vendored files that byte-match OpenAI's, built offline."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import tiktoken.load
from hypothesis import given, settings
from hypothesis import strategies as st
from tiktoken_ext import openai_public

from model.tokenizers.encodings import build_encoding, compare, tokenizer
from model.tokenizers.tokenizer import ASSETS

# texts that split differently across the three vocabularies
PIECES = ["😀", "👩‍👩‍👧", "日本語", "𠮷", "e\u0301", "שלום", "مرحبا", "Привет", "’"]
PIECES += [" ", "   \n ", "\r\n", "12345", "'LL", "Hello"]
TEXTS = st.one_of(st.text(max_size=60), st.lists(st.sampled_from(PIECES), max_size=12).map("".join))


def _expected_sha256(name: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The hash tiktoken's own recipe asks for, caught instead of downloading."""
    seen = {}

    def record(url: str, expected_hash: str) -> dict[bytes, int]:
        seen[url.rsplit("/", 1)[-1]] = expected_hash
        return {}

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", record)
    openai_public.ENCODING_CONSTRUCTORS[name]()
    return seen[f"{name}.tiktoken"]


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
def test_vendored_files_are_openais(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    actual = hashlib.sha256((ASSETS / f"{name}.tiktoken").read_bytes()).hexdigest()
    assert actual == _expected_sha256(name, monkeypatch)


def test_known_ids() -> None:
    assert tokenizer("cl100k_base").encode("hello world") == [15339, 1917]
    assert tokenizer("o200k_base").encode("hello world") == [24912, 2375]
    assert tokenizer("cl100k_base").encode("<|endoftext|>", allow_special=True) == [100257]
    assert tokenizer("o200k_base").eos_id == 199999


def test_building_leaves_tiktoken_as_it_was() -> None:
    build_encoding("cl100k_base")
    assert openai_public.load_tiktoken_bpe is tiktoken.load.load_tiktoken_bpe


def test_a_corrupted_file_is_refused(tmp_path: Path) -> None:
    data = bytearray((ASSETS / "cl100k_base.tiktoken").read_bytes())
    data[100] ^= 1
    (tmp_path / "cl100k_base.tiktoken").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="cl100k_base.tiktoken is not the expected file"):
        build_encoding("cl100k_base", tmp_path)


def test_a_missing_file_says_which(tmp_path: Path) -> None:
    shutil.copy(ASSETS / "cl100k_base.tiktoken", tmp_path)
    with pytest.raises(FileNotFoundError, match="o200k_base.tiktoken"):
        build_encoding("o200k_base", tmp_path)


def test_unknown_encoding() -> None:
    with pytest.raises(ValueError, match="Unknown encoding 'p50k_base'; the ones available are gpt2, cl100k_base"):
        tokenizer("p50k_base")
    with pytest.raises(ValueError, match="'gpt2' is not vendored"):
        build_encoding("gpt2")  # its recipe would download


def test_unused_ids_are_refused() -> None:
    cl100k = tokenizer("cl100k_base")
    assert cl100k.vocab_size == 100277
    with pytest.raises(ValueError, match="100256 is not a token id of cl100k_base"):
        cl100k.decode([100256])  # a gap between the ranks and the special tokens
    assert cl100k.search("100256") == (0, [])


def test_compare() -> None:
    rows = compare("hello world 日本語")
    assert [(r.name, r.vocab_size) for r in rows] == [("gpt2", 50257), ("cl100k_base", 100277), ("o200k_base", 200019)]
    assert [r.count for r in rows] == [9, 6, 4]  # GPT-2 splits each kanji into bytes; o200k knows "日本"
    assert [t.text for t in rows[2].tokens] == ["hello", " world", " 日本", "語"]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["cl100k_base", "o200k_base"]), TEXTS)
def test_tokens_and_merges_agree_with_tiktoken(name: str, text: str) -> None:
    tok = tokenizer(name)
    tokens = tok.tokens(text)
    assert [t.id for t in tokens] == tok.encode(text)
    assert "".join(text[t.start : t.end] for t in tokens) == text
    assert b"".join(t.bytes for t in tokens) == text.encode("utf-8")
    assert tok.bpe_history(text).final == tok.encode(text)
    assert tok.decode(tok.encode(text)) == text
