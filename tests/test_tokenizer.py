"""GPT-2's tokenizer: known ids, the token views, the vocabulary and the merge history.

The reference for every property is tiktoken's own Rust BPE (our Encoding object):
nothing here is downloaded.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.tokenizers.tokenizer import EOT, EOT_ID, MAX_HISTORY_BYTES, Tokenizer, gpt2_tokenizer

# Pieces GPT-2 handles awkwardly: multi-byte characters it splits, joiners, marks, scripts, spacing.
PIECES = [
    "😀", "👍🏽", "👩‍👩‍👧", "🏳️‍🌈", "\u200d",  # emoji, skin tones, ZWJ sequences
    "日本語", "漢", "𠮷", "한국어", "Ωμέγα", "Привет",  # scripts, 𠮷 outside the BMP
    "é", "e\u0301", "a\u0308\u0323", "שלום", "مرحبا", "\u200f",  # combining marks, right-to-left
    "’", "…", "€", "ﬁ", "\u00a0", " ", "  ", "\t", "\n", "\r\n", "   \n ",
    "0", "42", "3.14", "1,000,000", "'s", "'ll", "<|endoftext|>", "Hello", " world",
]
# runs of one character, where which of overlapping pairs merges first matters ("aaaaa")
RUNS = st.builds(str.__mul__, st.sampled_from("a1.=-*e!\n"), st.integers(2, 40))
TEXTS = st.one_of(
    st.text(max_size=60),
    st.lists(st.one_of(st.sampled_from(PIECES), RUNS, st.text(max_size=3)), max_size=20).map("".join),
)


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return gpt2_tokenizer()


def test_known_ids(tok: Tokenizer) -> None:
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode(" the") == [262]
    assert tok.vocab_size == 50257
    assert tok.eos_id == EOT_ID
    assert tok.decode([15496, 995]) == "Hello world"


def test_typed_endoftext_is_text_unless_special_is_allowed(tok: Tokenizer) -> None:
    assert EOT_ID not in tok.encode(EOT)
    assert tok.decode(tok.encode(EOT)) == EOT
    assert tok.encode(EOT, allow_special=True) == [EOT_ID]
    assert tok.encode(f"a{EOT}b", allow_special=True) == [64, EOT_ID, 65]
    [special] = tok.tokens(EOT, allow_special=True)
    assert (special.id, special.text, special.start, special.end, special.partial) == (EOT_ID, EOT, 0, 13, False)


@pytest.mark.parametrize("bad", [50257, -1, 10**12, "5", 1.0])
def test_bad_ids_are_refused_in_a_sentence(tok: Tokenizer, bad: object) -> None:
    with pytest.raises(ValueError, match="is not a token id of gpt2: ids run from 0 to 50256"):
        tok.decode([15496, bad])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="is not a token id"):
        tok.lookup(bad)  # type: ignore[arg-type]


def test_a_split_character_is_shown_as_bytes_and_spans_go_where_it_starts(tok: Tokenizer) -> None:
    # GPT-2 has no token for "’" (e2 80 99): it is two tokens, neither a character
    first, second = tok.tokens("’")
    assert (first.bytes, first.text, first.partial) == (b"\xe2\x80", "\\xe2\\x80", True)
    assert (second.bytes, second.text, second.partial) == (b"\x99", "\\x99", True)
    assert (first.start, first.end, second.start, second.end) == (0, 1, 1, 1)
    assert [t.id for t in tok.tokens("’")] == [447, 247]


def test_whole_characters_are_not_partial(tok: Tokenizer) -> None:
    tokens = tok.tokens("Hello world")
    assert [(t.text, t.start, t.end, t.partial) for t in tokens] == [("Hello", 0, 5, False), (" world", 5, 11, False)]
    assert tok.tokens("") == []


def test_lookup_and_token_bytes(tok: Tokenizer) -> None:
    entry = tok.lookup(262)
    assert (entry.id, entry.text, entry.bytes, entry.partial) == (262, " the", b" the", False)
    assert tok.lookup(447).partial and tok.lookup(447).text == "\\xe2\\x80"
    assert tok.lookup(EOT_ID).text == EOT
    assert tok.token_bytes(995) == b" world"


def test_search_by_substring_and_by_id(tok: Tokenizer) -> None:
    total, page = tok.search(" the", limit=3)
    assert total == 50 and [e.text for e in page] == [" the", " they", " their"]
    total_again, next_page = tok.search(" the", offset=3, limit=3)
    assert total_again == total and next_page[0].id > page[-1].id
    total, page = tok.search("262")
    assert page[0].id == 262 and page[0].text == " the"  # the id comes first
    assert {e.text for e in page[1:]} >= {"262", " 262"}
    assert len({e.id for e in page}) == total
    assert tok.search("no token has this in it") == (0, [])
    assert tok.search("9" * 5000) == (0, [])  # not taken for an id
    assert tok.search("\\xe2\\x80")[1][0].id == 447  # partial tokens are found by what is shown


def test_merge_history_of_a_word(tok: Tokenizer) -> None:
    history = tok.bpe_history("Hello")
    assert history.pretokens == ("Hello",)
    assert [tok.token_bytes(i) for i in history.initial[0]] == [b"H", b"e", b"l", b"l", b"o"]
    merges = [(s.left, s.right, s.count) for s in history.steps]
    assert merges == [(b"l", b"l", 1), (b"e", b"ll", 1), (b"ell", b"o", 1), (b"H", b"ello", 1)]
    assert [s.token_id for s in history.steps] == sorted(s.token_id for s in history.steps)
    assert history.steps[-1].symbols == ((15496,),)
    assert history.final == [15496]


def test_one_step_merges_every_occurrence(tok: Tokenizer) -> None:
    history = tok.bpe_history(" the the the")
    first = history.steps[0]
    assert (first.left, first.right, first.count) == (b" ", b"t", 3)
    assert history.final == [262, 262, 262]


def test_merge_history_has_a_limit(tok: Tokenizer) -> None:
    tok.bpe_history("a" * MAX_HISTORY_BYTES)
    with pytest.raises(ValueError, match=f"up to {MAX_HISTORY_BYTES} bytes; this one has {MAX_HISTORY_BYTES + 2}"):
        tok.bpe_history("é" * (MAX_HISTORY_BYTES // 2 + 1))


@settings(max_examples=400, deadline=None)
@given(TEXTS)
def test_tokens_tile_the_text(text: str) -> None:
    tok = gpt2_tokenizer()
    tokens = tok.tokens(text)
    assert [t.id for t in tokens] == tok.encode(text)
    assert b"".join(t.bytes for t in tokens) == text.encode("utf-8")
    assert [t.start for t in tokens[1:]] == [t.end for t in tokens[:-1]]
    assert "".join(text[t.start : t.end] for t in tokens) == text
    assert (tokens[-1].end if tokens else 0) == len(text)
    for t in tokens:
        assert t.partial == (not _is_utf8(t.bytes))
        if not t.partial:
            assert text[t.start : t.end] == t.text
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=400, deadline=None)
@given(TEXTS)
def test_merge_history_ends_in_tiktokens_tokens(text: str) -> None:
    tok = gpt2_tokenizer()
    history = tok.bpe_history(text)
    assert "".join(history.pretokens) == text
    initial_bytes = [b"".join(tok.token_bytes(i) for i in word) for word in history.initial]
    assert initial_bytes == [p.encode("utf-8") for p in history.pretokens]
    assert all(len(tok.token_bytes(i)) == 1 for word in history.initial for i in word)
    before = history.initial
    for step in history.steps:
        assert step.count >= 1 and tok.token_bytes(step.token_id) == step.left + step.right
        after = [b"".join(tok.token_bytes(i) for i in word) for word in step.symbols]
        assert after == initial_bytes  # merging never changes the bytes
        assert sum(map(len, before)) - sum(map(len, step.symbols)) == step.count
        before = step.symbols
    assert history.final == tok.encode(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=12).map("".join))
def test_special_tokens_allowed_still_tile(text: str) -> None:
    tok = gpt2_tokenizer()
    tokens = tok.tokens(text, allow_special=True)
    assert "".join(text[t.start : t.end] for t in tokens) == text
    assert [t.id for t in tokens].count(EOT_ID) == text.count(EOT)
    assert tok.decode([t.id for t in tokens]) == text


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
