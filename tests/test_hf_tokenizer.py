"""A checkpoint's tokenizer.json behind the Tokenizer interface, against Hugging Face `tokenizers`
itself: the same ids, decode round trips, bytes and spans, special tokens, byte fallback, and
a merge replay that ends in the tokenizer's own tokens.

The tokenizers are trained in tests/llama_fixtures.py in Llama 3's, SmolLM2's and Mistral's
shapes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from llama_fixtures import CHAT_TOKENS, TOKENIZERS
from model.tokenizers.hf_tokenizer import HFTokenizer
from model.tokenizers.tokenizer import MAX_HISTORY_BYTES

TEXTS = [
    "",
    "Once upon a time there was a little cat.",
    "  leading spaces, trailing spaces   ",
    "Héllo wörld: café naïve façade",
    "numbers 1234567 and 3.14159",
    "line one\nline two\n\n\ttabbed",
    "a snowman ☃, an emoji 🐈 and 漢字",
    "typed <|im_start|>user and <s> and </s> as text",
    "an added token: <tool> call(<tool>)",
    "zzzzqqqq xyzzy",  # letters the training text never had together
]


@pytest.fixture(scope="module", params=list(TOKENIZERS))
def pair(request: pytest.FixtureRequest) -> tuple[str, Tokenizer, HFTokenizer]:
    """(style, the reference tokenizer, ours on the same tokenizer.json)."""
    ref = TOKENIZERS[request.param]()
    return request.param, ref, HFTokenizer(ref.to_str(), request.param)


def tiles(chips: list, text: str) -> bool:
    """The spans are contiguous and run from 0 to the text's end, each at least as long as it starts."""
    if not chips:
        return text == ""
    edges = [0] + [t.end for t in chips]
    return [t.start for t in chips] == edges[:-1] and edges[-1] == len(text) and all(
        t.start <= t.end for t in chips)


def reference_ids(ref: Tokenizer, text: str, special: bool) -> list[int]:
    spec = Tokenizer.from_str(ref.to_str())
    spec.encode_special_tokens = not special
    return spec.encode(text, add_special_tokens=False).ids


@pytest.mark.parametrize("text", TEXTS)
def test_ids_equal_the_reference(pair, text: str) -> None:
    _, ref, tok = pair
    assert tok.encode(text) == reference_ids(ref, text, special=False)
    assert tok.encode(text, allow_special=True) == ref.encode(text, add_special_tokens=False).ids


@pytest.mark.parametrize("text", TEXTS)
def test_decode_round_trip(pair, text: str) -> None:
    _, ref, tok = pair
    ids = tok.encode(text)
    assert tok.decode(ids) == ref.decode(ids, skip_special_tokens=False)
    if text == text.strip(" ") or pair[0] != "sentencepiece":  # SentencePiece's decoder eats one leading space
        assert tok.decode(ids) == text


@pytest.mark.parametrize("text", TEXTS)
def test_tokens_tile_the_text_and_carry_their_bytes(pair, text: str) -> None:
    style, _, tok = pair
    chips = tok.tokens(text)
    assert [t.id for t in chips] == tok.encode(text)
    assert [t.bytes for t in chips] == [tok.token_bytes(t.id) for t in chips]
    assert tiles(chips, text)
    joined = b"".join(t.bytes for t in chips)
    if style == "sentencepiece" and text and not text.startswith(" "):  # "▁" is a space; one is put first
        assert joined == (" " + text).encode()
    else:
        assert joined == text.encode()
    for t in chips:  # a token's text is its bytes, with escapes where they split a character
        assert t.partial or t.text == t.bytes.decode()
        assert not t.special


def test_byte_fallback_tokens_are_their_bytes() -> None:
    tok = HFTokenizer(TOKENIZERS["sentencepiece"]().to_str(), "sp")
    chips = tok.tokens("a ☃")
    snowman = [t for t in chips if t.text.startswith("\\x")]
    assert [tok._strings[t.id] for t in snowman] == ["<0xE2>", "<0x98>", "<0x83>"]
    assert [t.bytes for t in snowman] == [b"\xe2", b"\x98", b"\x83"]
    assert [t.text for t in snowman] == ["\\xe2", "\\x98", "\\x83"] and all(t.partial for t in snowman)
    # the character belongs to the token holding its first byte
    assert [(t.start, t.end) for t in snowman] == [(2, 3), (3, 3), (3, 3)]
    assert tok.lookup(tok.encode("☃")[-1]).bytes == b"\x83"
    assert tok.decode(tok.encode("a ☃ b")) == "a ☃ b"


def test_byte_level_tokens_are_their_bytes() -> None:
    tok = HFTokenizer(TOKENIZERS["llama3"]().to_str(), "llama3")
    [space_cat] = [t for t in tok.tokens("the cat") if t.bytes == b" cat"]
    assert tok._strings[space_cat.id] == "Ġcat" and space_cat.text == " cat"
    pieces = tok.tokens("🐈")  # four bytes, never merged: one token each
    assert b"".join(t.bytes for t in pieces) == "🐈".encode() and pieces[0].partial


@pytest.mark.parametrize("style", ["llama3", "sentencepiece"])
def test_special_tokens_show_as_what_they_are(style: str) -> None:
    ref = TOKENIZERS[style]()
    tok = HFTokenizer(ref.to_str(), style)
    name = "<|im_start|>" if style == "llama3" else "<s>"
    chips = tok.tokens(f"{name}hello", allow_special=True)
    assert chips[0].special and chips[0].text == name and chips[0].bytes == name.encode()
    assert (chips[0].start, chips[0].end) == (0, len(name))
    assert not any(t.special for t in tok.tokens(f"{name}hello"))  # typed, it is text
    entry = tok.lookup(ref.token_to_id(name))
    assert entry.special and entry.text == name
    total, found = tok.search(name)
    assert total >= 1 and found[0].id == ref.token_to_id(name)


def test_what_comes_before_a_text() -> None:
    llama3 = HFTokenizer(TOKENIZERS["llama3"]().to_str(), "llama3")
    assert llama3.bos_ids == [CHAT_TOKENS.index("<|begin_of_text|>")]
    assert HFTokenizer(TOKENIZERS["smollm2"]().to_str(), "smollm2").bos_ids == []
    assert HFTokenizer(TOKENIZERS["sentencepiece"]().to_str(), "sp").bos_ids == [1]


def test_vocabulary(pair) -> None:
    _, ref, tok = pair
    assert tok.vocab_size == ref.get_vocab_size(with_added_tokens=True)
    for id in (0, 5, tok.vocab_size - 1):
        assert tok.lookup(id).bytes == tok.token_bytes(id)
    total, page = tok.search("at", limit=3)
    assert total == sum("at" in tok.lookup(i).text for i in range(tok.vocab_size)) and len(page) == 3
    assert [e.id for e in page] == sorted(e.id for e in page)
    assert tok.search("7")[1][0].id == 7  # a number also finds that id, first
    for bad in (-1, tok.vocab_size, "3", True):
        with pytest.raises(ValueError, match=f"is not a token id of {pair[0]}: ids run from 0 to {tok.vocab_size - 1}"):
            tok.token_bytes(bad)
    with pytest.raises(ValueError, match="is not a token id"):
        tok.decode([0, tok.vocab_size])


@pytest.mark.parametrize("text", TEXTS)
def test_merge_replay_ends_in_the_tokens(pair, text: str) -> None:
    style, _, tok = pair
    h = tok.bpe_history(text)
    assert h.final == tok.encode(text)
    # the pretokens are the text cut into pieces (SentencePiece's space in front included)
    prefix = " " if style == "sentencepiece" and text and not text.startswith(" ") else ""
    assert "".join(h.pretokens) == prefix + text
    before = h.initial
    for step in h.steps:
        # the merge makes its token from two pieces that spell it, at least once, in the text
        assert step.left + step.right == tok.token_bytes(step.token_id) and step.count >= 1
        assert sum(w.count(step.token_id) for w in step.symbols) >= step.count
        assert step.symbols != before
        before = step.symbols


def test_merge_replay_goes_by_the_merge_list() -> None:
    """Each step's merge is the one of lowest rank left in the text, so ranks only grow."""
    ref = TOKENIZERS["smollm2"]()
    tok = HFTokenizer(ref.to_str(), "smollm2")
    merges = json.loads(ref.to_str())["model"]["merges"]
    rank = {tok._vocab[a + b]: r for r, (a, b) in enumerate(merges)}
    h = tok.bpe_history("Once upon a time the cat sat on the mat.")
    assert len(h.steps) > 5
    ranks = [rank[s.token_id] for s in h.steps]
    assert ranks == sorted(ranks)
    assert all(len(w) == len(p.encode()) for w, p in zip(h.initial, h.pretokens))  # from single bytes


def test_merge_replay_limit() -> None:
    tok = HFTokenizer(TOKENIZERS["llama3"]().to_str(), "llama3")
    too_long = MAX_HISTORY_BYTES + 1
    with pytest.raises(ValueError, match=f"texts up to {MAX_HISTORY_BYTES} bytes; this one has {too_long}"):
        tok.bpe_history("a" * too_long)


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
def test_any_text(text: str) -> None:
    for style in ("llama3", "sentencepiece"):
        ref, tok = _cached(style)
        assert tok.encode(text) == reference_ids(ref, text, special=False)
        assert tiles(tok.tokens(text), text)
        assert tok.bpe_history(text).final == tok.encode(text)


_made: dict[str, tuple[Tokenizer, HFTokenizer]] = {}


def _cached(style: str) -> tuple[Tokenizer, HFTokenizer]:
    if style not in _made:
        ref = TOKENIZERS[style]()
        _made[style] = ref, HFTokenizer(ref.to_str(), style)
    return _made[style]


def test_lone_surrogates_read_as_replacement_characters() -> None:
    tok = HFTokenizer(TOKENIZERS["llama3"]().to_str(), "llama3")
    assert tok.encode("a\ud800b") == tok.encode("a\ufffdb")
    assert tiles(tok.tokens("a\ud800b"), "a\ud800b")
    assert tok.bpe_history("a\udfffb").final == tok.encode("a\ufffdb")


def test_end_of_sequence_from_the_checkpoint(tmp_path: Path) -> None:
    TOKENIZERS["llama3"]().save(str(tmp_path / "tokenizer.json"))
    assert HFTokenizer.from_checkpoint(tmp_path).eos_id is None and HFTokenizer.from_checkpoint(tmp_path).name == (
        tmp_path.name)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "<|im_end|>"}}))
    assert HFTokenizer.from_checkpoint(tmp_path).eos_id == CHAT_TOKENS.index("<|im_end|>")
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": [1, 3]}))  # Llama 3 lists several
    assert HFTokenizer.from_checkpoint(tmp_path, "x").eos_id == 1


def test_unreadable_tokenizers() -> None:
    with pytest.raises(ValueError, match=r"^not a tokenizer Hugging Face tokenizers can read"):
        HFTokenizer("{", "x")
    spec = json.loads(TOKENIZERS["smollm2"]().to_str())
    spec["model"]["continuing_subword_prefix"] = "##"
    with pytest.raises(ValueError, match="subword prefix or end-of-word suffix is not supported"):
        HFTokenizer(json.dumps(spec), "x")
