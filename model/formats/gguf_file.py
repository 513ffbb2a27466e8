"""A GGUF file (llama.cpp's format, also Ollama's and LM Studio's): its metadata, and its tensors
de-quantized to float32 with the `gguf` package.

A GGUF file is a header, then the tensors' bytes. The header holds key/value metadata (the
architecture's shape under "llama.*", "qwen2.*" or "gpt2.*"; the tokenizer under "tokenizer.*")
and, for each tensor, its name, shape, storage type and where its bytes start.

The header is read here rather than with gguf's GGUFReader, which builds a numpy view for every
string of the vocabulary and the merges: 3.4 s for SmolLM2's 98,000 strings on the development
machine, against 0.1 s for this plain reading. The tensors are de-quantized by gguf itself.

Shapes are given as torch and numpy give them, largest stride first: a (rows, columns) matrix;
GGUF's header lists them the other way round.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType
from gguf.quants import dequantize

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# the storage types this loader de-quantizes; gguf knows more, but these are the ones tested here
SUPPORTED = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K")
# what each storage type keeps of a weight, in a sentence a class can follow
STORAGE = {
    "F32": "each weight is kept whole, as a 32-bit number",
    "F16": "each weight is kept in 16 bits, a little rounded",
    "BF16": "each weight is kept in 16 bits with the range of 32, a little rounded",
    "Q8_0": "each block of 32 weights is kept in 8 bits, with one scale",
    "Q4_0": "each block of 32 weights is kept in 4 bits (16 levels), with one scale",
    "Q4_1": "each block of 32 weights is kept in 4 bits (16 levels), with a scale and a minimum",
    "Q4_K": "each block of 256 weights is kept in 4 bits, with a scale and a minimum for every 32",
    "Q5_K": "each block of 256 weights is kept in 5 bits, with a scale and a minimum for every 32",
    "Q6_K": "each block of 256 weights is kept in 6 bits, with a scale for every 16",
}
SCALARS = {  # value type -> struct format (little-endian)
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H", GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i", GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q", GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
}


class GGUFError(ValueError):
    """A file this reader cannot read; the message is one sentence, without the file's name."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # rows first, as torch has it
    kind: str               # the storage type's name: "Q4_1", "F32"...
    start: int              # byte offset in the file
    size: int               # bytes


class GGUFFile:
    """The metadata and tensor table of a GGUF file, with its tensors read on request."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # mmap refuses an empty file
            raise GGUFError("the file is empty, not a GGUF model") from None
        self.metadata: dict[str, object] = {}
        self.tensors: dict[str, TensorInfo] = {}
        try:
            self._read_header()
        except (struct.error, IndexError, UnicodeDecodeError):
            raise GGUFError("the file ends inside its header: it is truncated or not a GGUF model") from None

    # ---- the header ----

    def _read_header(self) -> None:
        data, self._at = self._map, 0
        if data[:4] != MAGIC:
            raise GGUFError(f"the file does not start with {MAGIC.decode()}, so it is not a GGUF model")
        version, n_tensors, n_values = struct.unpack_from("<IQQ", data, 4)
        if version not in (2, 3):
            raise GGUFError(f"GGUF version {version} is not supported (expected 2 or 3, little-endian)")
        self._at = 24
        for _ in range(n_values):
            key = self._string()
            self.metadata[key] = self._value(self._scalar("<I"))
        infos = []
        for _ in range(n_tensors):
            name = self._string()
            dims = [self._scalar("<Q") for _ in range(self._scalar("<I"))]
            infos.append((name, tuple(reversed(dims)), self._scalar("<I"), self._scalar("<Q")))
        align = int(self.metadata.get("general.alignment", DEFAULT_ALIGNMENT))
        start = -(-self._at // align) * align
        for name, shape, code, offset in infos:
            try:
                kind = GGMLQuantizationType(code).name
            except ValueError:
                kind = f"type {code}"
            if kind not in SUPPORTED:
                raise GGUFError(f"tensor {name} is stored as {kind}, which this loader does not de-quantize "
                                f"(it reads {', '.join(SUPPORTED)})")
            block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType[kind]]
            count = int(np.prod(shape, dtype=np.int64))
            if shape and shape[-1] % block:
                raise GGUFError(f"tensor {name} has rows of {shape[-1]} numbers, not whole blocks of {block} "
                                f"as {kind} stores them")
            info = TensorInfo(name, shape, kind, start + offset, count // block * block_bytes)
            if info.start + info.size > len(data):
                raise GGUFError(f"the file is truncated: tensor {name} should end at byte "
                                f"{info.start + info.size:,}, but the file has {len(data):,} bytes")
            self.tensors[name] = info

    def _scalar(self, fmt: str):
        (value,) = struct.unpack_from(fmt, self._map, self._at)
        self._at += struct.calcsize(fmt)
        return value

    def _string(self) -> str:
        n = self._scalar("<Q")
        raw = self._map[self._at:self._at + n]
        if len(raw) != n:
            raise IndexError
        self._at += n
        return raw.decode("utf-8")

    def _value(self, code: int):
        kind = GGUFValueType(code)
        if kind == GGUFValueType.STRING:
            return self._string()
        if kind == GGUFValueType.ARRAY:
            item, n = GGUFValueType(self._scalar("<I")), self._scalar("<Q")
            if item in SCALARS and item != GGUFValueType.BOOL:  # numbers: one read for the whole array
                values = np.frombuffer(self._map, dtype=np.dtype(SCALARS[item]), count=n, offset=self._at)
                self._at += values.nbytes
                return values.tolist()
            return [self._value(item) for _ in range(n)]
        return self._scalar(SCALARS[kind])

    # ---- tensors ----

    def read(self, name: str) -> torch.Tensor:
        """One tensor de-quantized to float32, in its (rows, columns) shape."""
        info = self.tensors[name]
        kind = GGMLQuantizationType[info.kind]
        raw = np.frombuffer(self._map, dtype=np.uint8, count=info.size, offset=info.start)
        block, block_bytes = GGML_QUANT_SIZES[kind]
        rows = raw.reshape(*info.shape[:-1], info.shape[-1] // block * block_bytes) if info.shape else raw
        values = dequantize(rows, kind)
        # F32 comes back as a view of the read-only file: copied, so the tensor owns its numbers
        values = np.ascontiguousarray(values, dtype=np.float32) if values.flags.writeable else values.copy()
        return torch.from_numpy(values).reshape(info.shape)

    def kinds(self) -> dict[str, int]:
        """How many tensors are stored in each type, most first."""
        counts: dict[str, int] = {}
        for info in self.tensors.values():
            counts[info.kind] = counts.get(info.kind, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))

    def close(self) -> None:
        self._map.close()
