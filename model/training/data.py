"""Training data: text files -> token files, and batches drawn from them.

`prepare` splits every source into documents (files, and stories separated by
<|endoftext|> lines), holds out whole documents for validation, and writes each
split once as a flat uint16 token file with <|endoftext|> after every document.
`Batches` draws random windows from a weighted mixture of the token files, plus
repeated-span rows (model/training/augment.py) when asked.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.training import augment
from model.training.corpus import documents, text_files
from model.tokenizers.tokenizer import EOT_ID, gpt2_encoding


# ---------------------------------------------------------------- data preparation

def write_tokens(docs: list[str], path: Path) -> int:
    """Tokenize documents, each followed by <|endoftext|>, into a flat uint16 file."""
    enc = gpt2_encoding()
    arrays = [np.array(ids + [EOT_ID], dtype=np.uint16) for ids in enc.encode_ordinary_batch(docs)]
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint16)
    flat.tofile(path)
    return int(flat.size)


@dataclass
class SourceSpec:
    name: str
    weight: float
    paths: list[str]


def parse_source(spec: str) -> SourceSpec:
    try:
        name, weight, paths = spec.split(":", 2)
        return SourceSpec(name, float(weight), paths.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME:WEIGHT:PATH[,PATH...], got {spec!r}") from None


def prepare(sources: list[SourceSpec], held_out: dict[str, list[str]], out: Path,
            val_fraction: float = 0.02, seed: int = 1337, invent_names: frozenset[str] = frozenset()) -> dict:
    """Tokenize each source into NAME.train.bin / NAME.val.bin, split by document.

    Sources named in invent_names have their character names replaced by invented ones
    (model/training/augment.py), in training and held-out documents alike.
    """
    out.mkdir(parents=True, exist_ok=True)
    meta: dict = {"tokenizer": "gpt2", "sources": {}}
    for src in sources:
        docs = [d for f in text_files(src.paths) for d in documents(f)]
        val_docs = [d for f in text_files(held_out[src.name]) for d in documents(f)] if src.name in held_out else []
        if src.name in invent_names:
            names = augment.character_names(docs)
            rng, used = random.Random(seed), set()
            # a fresh name for every story, used at least three times there, so that only reading the
            # story predicts its returns
            docs = [augment.invent_names(d, names, rng, used, min_uses=3) for d in docs]
            val_docs = [augment.invent_names(d, names, rng, used, min_uses=3) for d in val_docs]
        if src.name in held_out:
            train_docs = docs
        else:
            # whole documents go to validation, never a cut through one
            order = list(range(len(docs)))
            random.Random(seed).shuffle(order)
            n_val = max(1, round(len(docs) * val_fraction)) if len(docs) > 1 else 0
            val_set = set(order[:n_val])
            train_docs = [d for i, d in enumerate(docs) if i not in val_set]
            val_docs = [d for i, d in enumerate(docs) if i in val_set]
        meta["sources"][src.name] = {
            "weight": src.weight,
            "invented_names": src.name in invent_names,
            "files": [str(f) for f in text_files(src.paths)],
            "train_documents": len(train_docs),
            "val_documents": len(val_docs),
            "train_characters": sum(map(len, train_docs)),
            "train_tokens": write_tokens(train_docs, out / f"{src.name}.train.bin"),
            "val_tokens": write_tokens(val_docs, out / f"{src.name}.val.bin"),
        }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def load_tokens(path: Path) -> np.ndarray:
    return np.memmap(path, dtype=np.uint16, mode="r")


# ---------------------------------------------------------------- batches

class Batches:
    """Random windows from a weighted mixture of sources.

    A share of rows (get's repeat_share) are repeated spans instead (model/training/augment.py): random
    spans of random tokens (augment.SpanPools) for repeat_random of them, pieces of the mixture's text
    for the rest.
    The batch for (step, micro) depends only on the seed and those two numbers,
    so a resumed run sees exactly the data it would have seen.
    """

    def __init__(self, data: Path, split: str, n_ctx: int, seed: int, repeat_random: float = 0.5):
        meta = json.loads((data / "meta.json").read_text())
        self.names = [n for n, s in meta["sources"].items() if s[f"{split}_tokens"] > n_ctx + 1]
        self.tokens = {n: load_tokens(data / f"{n}.{split}.bin") for n in self.names}
        w = torch.tensor([meta["sources"][n]["weight"] for n in self.names], dtype=torch.float64)
        self.weights = w / w.sum()
        self.n_ctx = n_ctx
        self.seed = seed
        self.repeat_random = repeat_random
        self._pools: augment.SpanPools | None = None

    @property
    def pools(self) -> augment.SpanPools:
        """Where random spans draw their tokens, counted on first use."""
        if self._pools is None:
            frequent = augment.frequent_tokens(list(self.tokens.values()), exclude=EOT_ID)
            self._pools = augment.SpanPools(frequent, gpt2_encoding())
        return self._pools

    def get(self, step: int, micro: int, batch_size: int, source: str | None = None,
            repeat_share: float = 0.0, span: tuple[int, int] = (4, 64)) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch; `span` bounds the length of a repeated random span (short ones are learnt first)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 1009 + micro)
        if source is None:
            picks = torch.multinomial(self.weights, batch_size, replacement=True, generator=g).tolist()
        else:
            picks = [self.names.index(source)] * batch_size
        xs, ys = [], []
        for k in picks:
            toks = self.tokens[self.names[k]]
            if source is None and float(torch.rand((), generator=g)) < repeat_share:
                if float(torch.rand((), generator=g)) < self.repeat_random:
                    x, y = augment.spans_in_text(self.n_ctx, g, self.pools, toks, *span)
                else:
                    x, y = augment.repeated_row(self.n_ctx, g, toks)
            else:
                start = int(torch.randint(0, len(toks) - self.n_ctx - 1, (), generator=g))
                row = torch.from_numpy(toks[start:start + self.n_ctx + 1].astype(np.int64))
                x, y = row[:-1], row[1:]
            xs.append(x)
            ys.append(y)
        return torch.stack(xs), torch.stack(ys)
