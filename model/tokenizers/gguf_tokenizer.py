"""A GGUF file's own tokenizer, rebuilt with Hugging Face `tokenizers` from its metadata and shown
through model/tokenizers/hf_tokenizer.py's HFTokenizer, as a checkpoint's tokenizer.json is.

A GGUF file has no tokenizer.json. It keeps the vocabulary (tokenizer.ggml.tokens, spelled as
byte-level BPE spells them: "Ġ" is a space), the merges, each token's type (normal, control,
user-defined...) and the special ids. How text is cut into pieces before the merges apply is not
written out: tokenizer.ggml.pre names it, and llama.cpp keeps one rule per name. The rules for
the names below are those of the models' own tokenizer.json files.
"""

from __future__ import annotations

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from model.tokenizers.hf_tokenizer import HFTokenizer

# llama.cpp's token types (gguf.constants.TokenType)
CONTROL, USER_DEFINED = 3, 4
# Llama 3's split (the shape of cl100k_base's): digits in groups of up to three
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# Qwen2's: the same, but every digit alone
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _split_then_bytes(pattern: str) -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


# tokenizer.ggml.pre -> (the pre-tokenizer, whether a piece that is a whole token skips the merges)
PRE_TOKENIZERS = {
    "gpt2": lambda: (pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), False),
    # SmolLM2: GPT-2's split after every digit is cut off alone
    "smollm": lambda: (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]),
                       False),
    "llama-bpe": lambda: (_split_then_bytes(LLAMA3_SPLIT), True),  # Llama 3's tokenizer.json has ignore_merges
    "qwen2": lambda: (_split_then_bytes(QWEN2_SPLIT), False),
}


def gguf_tokenizer(metadata: dict, name: str) -> HFTokenizer:
    """The tokenizer a GGUF file's metadata describes. Raises ValueError, in one sentence, for one
    this cannot rebuild."""
    tokens = metadata.get("tokenizer.ggml.tokens")
    if not tokens:
        raise ValueError("the file holds no tokenizer (no tokenizer.ggml.tokens), and a model cannot be shown "
                         "without its own")
    kind = metadata.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"its tokenizer is of kind {kind!r}; only byte-level BPE ('gpt2', as in Llama 3, "
                         "SmolLM2, Qwen2 and GPT-2) is rebuilt from a GGUF file")
    pre = metadata.get("tokenizer.ggml.pre", "gpt2")
    if pre not in PRE_TOKENIZERS:
        raise ValueError(f"its tokenizer splits text the {pre!r} way, which is not known here "
                         f"(known: {', '.join(PRE_TOKENIZERS)})")
    merges = [tuple(m.split(" ", 1)) for m in metadata.get("tokenizer.ggml.merges", [])]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError("its vocabulary lists the same token twice")
    pre_tokenizer, ignore_merges = PRE_TOKENIZERS[pre]()
    tok = Tokenizer(models.BPE(vocab, merges, ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    # control tokens (<|im_start|>) are special; user-defined ones (<think>) are whole but plain text
    types = metadata.get("tokenizer.ggml.token_type") or []
    tok.add_tokens([AddedToken(tokens[i], special=t == CONTROL, normalized=False)
                    for i, t in enumerate(types) if t in (CONTROL, USER_DEFINED)])
    bos = metadata.get("tokenizer.ggml.bos_token_id")
    if metadata.get("tokenizer.ggml.add_bos_token") and isinstance(bos, int) and 0 <= bos < len(tokens):
        tok.post_processor = processors.TemplateProcessing(single=f"{tokens[bos]} $A",
                                                           special_tokens=[(tokens[bos], bos)])
    eos = metadata.get("tokenizer.ggml.eos_token_id")
    tokenizer = HFTokenizer(tok.to_str(), name, eos_id=eos if isinstance(eos, int) else None)
    template = metadata.get("tokenizer.chat_template")
    tokenizer.chat_template = template if isinstance(template, str) else None
    return tokenizer
