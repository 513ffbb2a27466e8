"""Tokenizers: GPT-2's BPE, other encodings to compare, a checkpoint's own tokenizer.json, a GGUF file's vocabulary, and chat templates."""
