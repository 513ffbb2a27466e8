"""Small Llama-family checkpoints and tokenizers, made by the reference libraries themselves.

Tokenizers are trained with Hugging Face `tokenizers` on a few sentences, in the three
shapes the Llama family uses: Llama 3's (byte-level BPE after a split regex, ignore_merges,
a beginning-of-text token), SmolLM2's (byte-level BPE with digits split) and Mistral's
(SentencePiece-style: "▁" for spaces, byte fallback to <0x..> tokens). Models are
`transformers`' own classes with every parameter random, saved with save_pretrained.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

SENTENCES = [
    "Once upon a time there was a little cat who lived in a red house.",
    "The cat sat on the mat, and the dog sat on the cat's mat too!",
    "Héllo wörld: café, naïve, façade — 12345 apples and 678 pears.",
    "She said \"hello\" three times, then 2024 more times.\n\nThe end.",
    "def add(a, b):\n    return a + b  # tabs\tand  spaces",
]
# Llama 3's split regex (the same shape as cl100k_base's)
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CHAT_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"]


def byte_level_tokenizer(style: str = "llama3") -> Tokenizer:
    """Byte-level BPE: "llama3" (split regex, ignore_merges, <|begin_of_text|> added in front) or
    "smollm2" (ByteLevel's own regex, digits one by one, nothing added). Both carry chat tokens
    and one added token that is not special (<tool>)."""
    tok = Tokenizer(models.BPE())
    if style == "llama3":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=CHAT_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SENTENCES, trainer)
    tok.add_tokens([AddedToken("<tool>", special=False, normalized=False)])
    if style == "llama3":
        tok.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)])
        spec = json.loads(tok.to_str())
        spec["model"]["ignore_merges"] = True
        tok = Tokenizer.from_str(json.dumps(spec))
    return tok


def sentencepiece_tokenizer() -> Tokenizer:
    """SentencePiece-style BPE as Mistral's tokenizer.json has it: Metaspace, byte fallback to the
    256 <0x..> tokens (in the vocabulary after <unk>, <s> and </s>), <s> added in front."""
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(SENTENCES, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    spec = json.loads(tok.to_str())
    # the byte tokens come right after the special ones, as in SentencePiece's vocabularies
    trained = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
    order = [t for t, _ in trained if t in specials]
    order += [f"<0x{b:02X}>" for b in range(256)]
    order += [t for t, _ in trained if t not in specials]
    spec["model"]["vocab"] = {t: i for i, t in enumerate(order)}
    return Tokenizer.from_str(json.dumps(spec))


TOKENIZERS = {"llama3": lambda: byte_level_tokenizer("llama3"), "smollm2": lambda: byte_level_tokenizer("smollm2"),
              "sentencepiece": sentencepiece_tokenizer}

SMALL = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, max_position_embeddings=64,
             rms_norm_eps=1e-5, attn_implementation="eager")  # eager: the only one that returns attentions
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16, "rope_theta": 500000.0}
# name: (config class, model class, tokenizer, what the variant covers)
VARIANTS = {
    # grouped-query attention (4 query heads, 2 KV heads), tied head, Llama 3's rotary scaling
    "llama": (LlamaConfig, LlamaForCausalLM, "llama3",
              dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, rope_parameters=LLAMA3_ROPE,
                   bos_token_id=0, eos_token_id=1)),
    # one KV head per query head, untied head, biases everywhere attention_bias and mlp_bias put them
    "llama-untied": (LlamaConfig, LlamaForCausalLM, "smollm2",
                     dict(num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False,
                          attention_bias=True, mlp_bias=True, bos_token_id=0, eos_token_id=1)),
    # q/k/v biases, one KV head for all 4 query heads, tied head
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, "llama3",
              dict(num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=True,
                   rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, eos_token_id=3)),
    # 8 query heads of 16 over a width of 64 (head_dim given), 2 KV heads, untied, a sliding window
    # of 48 (the context is capped there), SentencePiece-style tokenizer
    "mistral": (MistralConfig, MistralForCausalLM, "sentencepiece",
                dict(num_attention_heads=8, num_key_value_heads=2, head_dim=16, tie_word_embeddings=False,
                     sliding_window=48, bos_token_id=1, eos_token_id=2)),
}


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random: norms near 1, the rest with std 0.1 (sharp enough attention patterns,
    a residual stream small enough that fp32 rounding stays well inside 1e-4)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1 + 0.1 * noise if "norm" in name else 0.1 * noise)


def save_reference(variant: str, directory: Path, dtype: torch.dtype = torch.float32, seed: int = 0):
    """Save a random checkpoint of the variant (weights in dtype, with its tokenizer.json) and return
    transformers' model read back from those files in fp32."""
    config_class, model_class, tokenizer, options = VARIANTS[variant]
    tok = TOKENIZERS[tokenizer]()
    config = config_class(vocab_size=tok.get_vocab_size(), **SMALL, **options)
    torch.manual_seed(seed)
    model = model_class(config).eval()
    randomize(model, seed)
    model.to(dtype).save_pretrained(directory)
    tok.save(str(directory / "tokenizer.json"))
    return model_class.from_pretrained(directory, dtype=torch.float32, attn_implementation="eager").eval()
