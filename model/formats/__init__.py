"""Checkpoint formats: the architecture registry, each family's Hugging Face layout, tensor reading, and GGUF files."""
