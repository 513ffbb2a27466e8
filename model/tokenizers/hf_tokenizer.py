"""A checkpoint's own tokenizer (its tokenizer.json, through Hugging Face `tokenizers`), behind
the interface of model/tokenizers/tokenizer.py's Tokenizer: token chips with bytes and spans, the
vocabulary, and the byte-pair merges replayed from the tokenizer's own merge list.

Llama-family tokenizers come in two spellings of a token, and each token's bytes are read
back from its spelling:

- byte-level BPE (Llama 3, Qwen2, SmolLM2): every byte is spelled by one printable
  character, as in GPT-2's files ("Ġ" is a space);
- SentencePiece-style BPE (Mistral, Llama 2): tokens are text, "▁" is a space, and a
  character missing from the vocabulary falls back to its UTF-8 bytes, one token each
  (<0xE2> is the byte 0xE2).

Special and chat tokens (<|begin_of_text|>, <|im_start|>) are shown as what they are: their
own text, marked special. Typed into a text they are ordinary text unless allow_special.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

import tokenizers

from model.tokenizers.tokenizer import (MAX_HISTORY_BYTES, BpeHistory, AppliedMerge, Token, VocabEntry, byte_level_alphabet,
                             readable, replay_merges, search_entries)

SPACE = "▁"  # SentencePiece's space
BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # a byte-fallback token
LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # not text; "�" in its place, as tiktoken does
_NO_MERGE = 2**63  # the rank of a pair the merge list does not join


def _types(node: object) -> Iterator[str]:
    """Every component type named in a tokenizer.json section (sequences nest)."""
    if isinstance(node, dict):
        if isinstance(node.get("type"), str):
            yield node["type"]
        for value in node.values():
            yield from _types(value)
    elif isinstance(node, list):
        for value in node:
            yield from _types(value)


class HFTokenizer:
    """A tokenizer.json (byte-pair encoding), with the views of it the visualizer shows."""

    def __init__(self, spec: str, name: str, eos_id: int | None = None):
        """spec: the text of a tokenizer.json. Raises ValueError for a file this cannot show."""
        try:
            data = json.loads(spec)
        except json.JSONDecodeError as e:
            raise ValueError(f"not a tokenizer Hugging Face tokenizers can read (not valid JSON: {e})") from None
        model = data.get("model") if isinstance(data, dict) else None
        if not isinstance(model, dict):
            raise ValueError("not a tokenizer Hugging Face tokenizers can read (no model in it)")
        if model.get("type") != "BPE":
            raise ValueError(f"the tokenizer's model is {model.get('type')!r}; only byte-pair encoding (BPE) is shown")
        if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
            raise ValueError("BPE with a subword prefix or end-of-word suffix is not supported")
        try:
            self._with_special = tokenizers.Tokenizer.from_str(spec)
            self._plain = tokenizers.Tokenizer.from_str(spec)
        except BaseException as e:  # a plain Exception, or pyo3's PanicException from inside the library
            if not isinstance(e, Exception) and type(e).__name__ != "PanicException":
                raise
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ValueError(f"not a tokenizer Hugging Face tokenizers can read ({reason})") from None
        self._plain.encode_special_tokens = True  # typed special tokens are text, as in GPT-2's encode_ordinary
        self.name = name
        self.byte_level = "ByteLevel" in {*_types(data.get("pre_tokenizer")), *_types(data.get("decoder"))}
        self.byte_fallback = bool(model.get("byte_fallback"))
        self.ignore_merges = bool(model.get("ignore_merges"))
        self._vocab: dict[str, int] = self._with_special.get_vocab(with_added_tokens=True)
        self._strings = {i: s for s, i in self._vocab.items()}
        if not self._strings:
            raise ValueError("the tokenizer has no tokens")
        self._added = self._with_special.get_added_tokens_decoder()  # id -> AddedToken
        self._specials = {i for i, t in self._added.items() if t.special}
        merges = model.get("merges") or []
        # a merge joins two symbols into the token they spell together; lower rank was learned earlier
        pairs = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]
        self._ranks: dict[tuple[str, str], int] = {p: r for r, p in reversed(list(enumerate(pairs)))}
        self._alphabet = byte_level_alphabet() if self.byte_level else {}
        self._size = max(self._strings) + 1
        self.eos_id = eos_id if eos_id in self._strings else None
        self.chat_template: str | None = None  # a chat model's own template (model/tokenizers/chat.py), where its file has one

    @classmethod
    def from_checkpoint(cls, directory: Path, name: str | None = None) -> HFTokenizer:
        """tokenizer.json of a checkpoint directory; the end-of-sequence token comes from config.json's
        eos_token_id (the first, if it lists several) or tokenizer_config.json's eos_token."""
        spec = (directory / "tokenizer.json").read_text(encoding="utf-8", errors="replace")
        tokenizer = cls(spec, name or directory.name)
        tokenizer.eos_id = _eos_id(directory, tokenizer._vocab)
        return tokenizer

    # ---- the interface of model/tokenizer.Tokenizer ----

    @property
    def vocab_size(self) -> int:
        """Ids run from 0 to vocab_size - 1 (the model's own vocabulary may have room for more)."""
        return self._size

    @property
    def start_id(self) -> int | None:
        """The token a text starts after: what the tokenizer puts first (Llama 3's <|begin_of_text|>, Mistral's
        <s>), else its end-of-text token, which starts the next document in the training stream (SmolLM2's,
        Qwen2's); None where it has neither."""
        return self.bos_ids[0] if self.bos_ids else self.eos_id

    @cached_property
    def bos_ids(self) -> list[int]:
        """What the tokenizer puts before a text when asked for its special tokens (Llama 3's
        <|begin_of_text|>; nothing for SmolLM2 or Qwen2)."""
        plain = self._plain.encode("a", add_special_tokens=False).ids
        full = self._plain.encode("a", add_special_tokens=True).ids
        return full[:full.index(plain[0])] if plain and plain[0] in full else []

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Typed special tokens ("<|im_start|>") are ordinary text unless allow_special is set.
        Nothing is added around the text (no beginning-of-text token)."""
        return self._encoder(allow_special).encode(_text(text), add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        """Text of the ids, as the tokenizer's own decoder writes it; bytes that do not form a
        character become "�"."""
        for id in ids:
            self.token_bytes(id)  # a clear error for a bad id
        return self._with_special.decode(list(ids), skip_special_tokens=False)

    def token_bytes(self, id: int) -> bytes:
        if isinstance(id, int) and not isinstance(id, bool) and id in self._strings:
            return self._bytes(id)
        raise ValueError(f"{id!r} is not a token id of {self.name}: ids run from 0 to {self.vocab_size - 1}.")

    def tokens(self, text: str, allow_special: bool = False) -> list[Token]:
        """The text's tokens, each with its bytes and its span of the text.

        Spans come from the tokenizer's offsets, made to tile the text as model/tokenizer.Token
        says: a character split over several byte tokens goes to the first, the later ones get
        an empty span; anything the tokenizer dropped goes to the token before it. A token's
        bytes are what the model sees, which may differ from its span (SentencePiece's leading
        space before the first word is in the bytes, not in the text).
        """
        enc = self._encoder(allow_special).encode(_text(text), add_special_tokens=False)
        out, char = [], 0
        for n, (id, (_, stop)) in enumerate(zip(enc.ids, enc.offsets)):
            end = len(text) if n == len(enc.ids) - 1 else max(stop, char)
            data = self._bytes(id)
            shown, partial = self._shown(id, data)
            out.append(Token(id, shown, data, char, end, partial, special=id in self._specials))
            char = end
        return out

    def lookup(self, id: int) -> VocabEntry:
        data = self.token_bytes(id)
        text, partial = self._shown(id, data)
        return VocabEntry(id, text, data, partial, special=id in self._specials)

    def search(self, query: str, offset: int = 0, limit: int = 50) -> tuple[int, list[VocabEntry]]:
        return search_entries(self._entries, query, offset, limit)

    def bpe_history(self, text: str) -> BpeHistory:
        """The merges that turn the text's pieces into its tokens, from the tokenizer's own merge list.

        The tokenizer itself splits the text (its normalizer, pre-tokenizer and added tokens),
        which gives the pretokens; each starts as its smallest symbols (bytes for byte-level
        BPE; characters, or the byte tokens of a character missing from the vocabulary, for
        SentencePiece-style BPE) and is merged, lowest rank first, leftmost first, as the
        tokenizer does. Each step applies one merge everywhere it is a pretoken's lowest.
        Exceptions, as in the tokenizer: an added token is one symbol from the start, and under
        ignore_merges (Llama 3) a pretoken that is a whole token of the vocabulary starts as it.
        AppliedMerge.token_id is the token the merge makes.
        """
        size = len(text.encode("utf-8", errors="surrogatepass"))
        if size > MAX_HISTORY_BYTES:
            raise ValueError(
                f"The merge history is shown for texts up to {MAX_HISTORY_BYTES} bytes; this one has {size}."
            )
        enc = self._plain.encode(_text(text), add_special_tokens=False)
        groups: list[list[int]] = []  # each pretoken's final tokens
        last = object()
        for id, word in zip(enc.ids, enc.word_ids):
            if word is None or word != last or id in self._added:
                groups.append([])
            groups[-1].append(id)
            last = None if id in self._added else word
        words = [self._symbols(g) for g in groups]
        pretokens = tuple(readable(b"".join(self._bytes(i) for i in g))[0] for g in groups)
        initial, merges = replay_merges(words, self._pair_rank, self._ids)
        steps = tuple(AppliedMerge(self._vocab[m.left + m.right], self._spelled_bytes(m.left), self._spelled_bytes(m.right),
                                m.count, m.symbols) for m in merges)
        return BpeHistory(pretokens, initial, steps)

    # ---- spelling ----

    def _encoder(self, allow_special: bool) -> tokenizers.Tokenizer:
        return self._with_special if allow_special else self._plain

    def _bytes(self, id: int) -> bytes:
        """The bytes a token stands for (an added token: its own text)."""
        s = self._strings[id]
        if id in self._added:
            return s.encode("utf-8")
        return self._spelled_bytes(s)

    def _spelled_bytes(self, s: str) -> bytes:
        if self.byte_level:
            return bytes(self._alphabet[c] for c in s) if all(c in self._alphabet for c in s) else s.encode("utf-8")
        if self.byte_fallback and (m := BYTE_TOKEN.fullmatch(s)):
            return bytes([int(m[1], 16)])
        return s.replace(SPACE, " ").encode("utf-8")

    def _shown(self, id: int, data: bytes) -> tuple[str, bool]:
        """A special token reads as its own text; any other as its bytes (escapes where partial)."""
        if id in self._specials:
            return self._strings[id], False
        return readable(data)

    def _symbols(self, ids: list[int]) -> list[str]:
        """A pretoken's smallest symbols, spelled as the vocabulary spells them, from its final tokens."""
        if len(ids) == 1 and ids[0] in self._added:
            return [self._strings[ids[0]]]
        out: list[str] = []
        for i in ids:
            s = self._strings[i]
            fixed = (self.byte_fallback and BYTE_TOKEN.fullmatch(s)) or not all(c in self._vocab for c in s)
            out += [s] if fixed else list(s)  # a byte-fallback or unknown token is not made by merges
        # under ignore_merges a pretoken that is a whole token is taken as it is; where the merges
        # make the same token anyway (nearly always), they are shown
        if self.ignore_merges and len(ids) == 1 and self._merged(out) != [self._strings[ids[0]]]:
            return [self._strings[ids[0]]]
        return out

    def _merged(self, word: list[str]) -> list[str]:
        """One pretoken's symbols after every merge, lowest rank first, leftmost first."""
        word = list(word)
        while len(word) > 1:
            ranks = [self._pair_rank(word, i) for i in range(len(word) - 1)]
            rank = min(ranks)
            if rank == _NO_MERGE:
                break
            i = ranks.index(rank)
            word[i : i + 2] = [word[i] + word[i + 1]]
        return word

    def _pair_rank(self, word: list[str], i: int) -> int:
        return self._ranks.get((word[i], word[i + 1]), _NO_MERGE)

    def _ids(self, word: list[str]) -> tuple[int, ...]:
        return tuple(self._vocab[s] for s in word)

    @cached_property
    def _entries(self) -> dict[int, VocabEntry]:
        """Every token by id, for search; built on first use."""
        return {id: self.lookup(id) for id in sorted(self._strings)}


def _text(text: str) -> str:
    return LONE_SURROGATE.sub("\ufffd", text)


def _eos_id(directory: Path, vocab: dict[str, int]) -> int | None:
    for name, read in (("config.json", lambda c: c.get("eos_token_id")),
                       ("tokenizer_config.json", lambda c: vocab.get(_token_text(c.get("eos_token"))))):
        path = directory / name
        try:
            found = read(json.loads(path.read_text())) if path.is_file() else None
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            found = None
        if isinstance(found, list):
            found = found[0] if found else None
        if isinstance(found, int) and not isinstance(found, bool):
            return found
    return None


def _token_text(token: object) -> str | None:
    """tokenizer_config.json names a token as text, or as an object with its content."""
    if isinstance(token, dict):
        token = token.get("content")
    return token if isinstance(token, str) else None
