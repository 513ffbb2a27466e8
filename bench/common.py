"""What every benchmark shares: the machine's facts, the models (ours and the reference on
the same weights), interleaved timing, and markdown tables.

Figures on a shared laptop drift by tens of percent over minutes, so every benchmark
times ours and the reference in alternation (ABBA...) and prints their ratio: the
ratio holds when the absolute figures do not.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from model.nets.gpt2 import GPT, GPTConfig
from model.formats.gpt2_checkpoint import save_checkpoint
from model.loading import load_model

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "model" / "checkpoints" / "deepdive-tiny"
CACHE = Path(tempfile.gettempdir()) / "deepdive-bench"  # random checkpoints, made once and reused

# shapes a benchmark can run on; "default" is only used when the default checkpoint is missing
SHAPES = {
    "default": (GPTConfig(n_layer=6, n_head=8, n_embd=256, n_ctx=256), torch.float16),
    "124m": (GPTConfig(n_layer=12, n_head=12, n_embd=768, n_ctx=1024), torch.float32),
    "tiny": (GPTConfig(n_layer=2, n_head=4, n_embd=64, n_ctx=128), torch.float32),  # smoke tests
}


# ---- arguments and set-up ----

def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default=str(DEFAULT_MODEL),
                   help="the default model's checkpoint directory (default: %(default)s; when it is missing "
                        "a random model of its shape stands in, and the output says so)")
    p.add_argument("--models", default="default,124m",
                   help="comma-separated: default (the --model checkpoint), 124m (random weights, GPT-2 small's "
                        "shape), tiny (2 layers x 64 wide, for smoke tests); default: %(default)s")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="tiny settings: checks the benchmark runs, measures nothing")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--wait-quiet", type=float, default=120, metavar="S",
                   help="wait up to S seconds for other processes to leave the CPUs before starting "
                        "(default: %(default)s)")
    return p


def setup(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    if not args.quick and args.wait_quiet > 0:
        wait_quiet(args.wait_quiet)
    facts = machine_facts()
    print_facts(facts)
    OTHERS.start()
    atexit.register(report_others)
    return facts


# ---- other processes on the CPUs ----

def _cpu_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / tick, sum(fields[:8]) / tick


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class OtherLoad:
    """How many cores other processes kept busy while the benchmark ran. Servers the benchmark
    started count as its own once they have exited (os.times counts children that were waited for)."""

    def __init__(self) -> None:
        self._t0: tuple[float, float, float] | None = None

    def start(self) -> None:
        self._t0 = (time.perf_counter(), _cpu_busy()[0], _own_cpu())

    def cores(self) -> float:
        if self._t0 is None:
            return float("nan")
        wall0, busy0, own0 = self._t0
        wall = time.perf_counter() - wall0
        return max(0.0, (_cpu_busy()[0] - busy0 - (_own_cpu() - own0)) / wall) if wall > 0 else float("nan")


OTHERS = OtherLoad()


def report_others() -> None:
    cores = OTHERS.cores()
    if cores == cores:
        flag = "  <- figures distorted" if cores > 0.2 else ""
        print(f"\n# other processes kept {cores:.2f} of {os.cpu_count()} cores busy during this run{flag}; "
              f"{NOISY_ROUNDS[0]} timing rounds were thrown away and run again because of them")


def _others_now(seconds: float) -> float:
    """Cores other processes keep busy, over a look of `seconds`."""
    busy0, own0, t0 = _cpu_busy()[0], _own_cpu(), time.perf_counter()
    time.sleep(seconds)
    return max(0.0, (_cpu_busy()[0] - busy0 - (_own_cpu() - own0)) / (time.perf_counter() - t0))


def wait_quiet(max_wait_s: float, threshold: float = 0.15) -> None:
    """Wait (up to max_wait_s) until other processes use less than `threshold` cores over a 2-second look."""
    deadline = time.perf_counter() + max_wait_s
    while True:
        others = _others_now(2.0)
        if others < threshold:
            return
        if time.perf_counter() > deadline:
            print(f"# (gave up waiting for a quiet machine: other processes use {others:.2f} cores)")
            return
        print(f"# waiting for a quiet machine: other processes use {others:.2f} cores", flush=True)
        time.sleep(5)


@dataclass
class ModelRef:
    label: str       # "default", "124m", "tiny"
    path: Path       # a checkpoint directory in the Hugging Face layout
    note: str        # where the weights come from


def model_refs(args: argparse.Namespace) -> list[ModelRef]:
    refs = []
    for label in [m.strip() for m in args.models.split(",") if m.strip()]:
        if label == "default" and Path(args.model).is_dir():
            refs.append(ModelRef(label, Path(args.model), f"checkpoint {args.model}"))
        elif label in SHAPES:
            note = "random weights"
            if label == "default":
                note += f" (the default shape; {args.model} not found)"
            refs.append(ModelRef(label, random_checkpoint(label), note))
        else:
            sys.exit(f"unknown model {label!r}: choose from default, 124m, tiny")
    return refs


def random_checkpoint(shape: str, seed: int = 0) -> Path:
    """A seeded random GPT-2 of the named shape, saved once under the temp dir and reused."""
    config, dtype = SHAPES[shape]
    directory = CACHE / f"{shape}-{config.n_layer}x{config.n_embd}-{str(dtype).removeprefix('torch.')}-seed{seed}"
    if not (directory / "model.safetensors").is_file():
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = GPT(config)
        tmp = directory.with_name(directory.name + f".tmp{os.getpid()}")
        save_checkpoint(model, tmp, dtype=dtype)
        try:
            tmp.rename(directory)
        except OSError:  # another benchmark made it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    return directory


def load_ours(path: Path) -> GPT:
    return load_model(path).model


def load_reference(path: Path):
    """transformers' GPT2LMHeadModel on the same files, fp32, default (SDPA) attention."""
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return GPT2LMHeadModel.from_pretrained(path, dtype=torch.float32).eval()


@torch.inference_mode()
def max_logit_diff(ours: GPT, ref, T: int = 16) -> float:
    """The two models on the same tokens: how far apart their logits are (a check they hold the same weights)."""
    ids = torch.randint(0, ours.config.vocab_size, (1, T), generator=torch.Generator().manual_seed(0))
    return float((ours(ids) - ref(ids).logits).abs().max())


# ---- the machine ----

def machine_facts() -> dict:
    facts = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "cpu": platform.processor() or platform.machine()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        facts["cpu"] = info.get("Model name", facts["cpu"]).strip()
        flags = info.get("Flags", "").split()
        facts["isa"] = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags)
    except (OSError, subprocess.SubprocessError):
        pass
    facts["cores"] = os.cpu_count()
    try:
        with open("/proc/meminfo") as f:
            facts["memory_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    facts["python"] = platform.python_version()
    facts["torch"] = torch.__version__
    facts["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    try:
        import transformers
        facts["transformers"] = transformers.__version__
    except ImportError:
        facts["transformers"] = None
    facts["torch_threads"] = torch.get_num_threads()
    facts["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS")
    facts["load_average_1min"] = os.getloadavg()[0]
    facts["busy"] = others_busy()
    return facts


def others_busy() -> str | None:
    """A line saying what else is using the CPUs, if anything known is (figures are then distorted)."""
    try:
        out = subprocess.run(["pgrep", "-af", "model.training.train run"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    if out.strip():
        return "a training run (model.train run) is using the CPUs: figures are distorted"
    others = _others_now(1.0)
    if others > 0.15:
        return f"other processes use {others:.2f} cores as the benchmark starts: figures may be distorted"
    return None


def print_facts(facts: dict) -> None:
    print(f"# {facts['date']} · {facts['cpu']} · {facts['cores']} cores ({facts.get('isa', '')}) · "
          f"{facts.get('memory_gib', '?')} GiB · torch {facts['torch']} ({facts['torch_cpu_capability']}) · "
          f"transformers {facts['transformers']} · torch threads {facts['torch_threads']} · "
          f"OMP_NUM_THREADS={facts['OMP_NUM_THREADS']}")
    if facts["busy"]:
        print(f"# WARNING: {facts['busy']}")
    sys.stdout.flush()


# ---- timing ----

def interleaved(fns: dict[str, Callable[[], object]], repeat: int, warmup: int = 1,
                budget_s: float | None = None, on_round: Callable[[bool], None] | None = None) -> dict[str, list[float]]:
    """Time each fn `repeat` times, in alternation (order reversed every round), after `warmup` untimed rounds.

    A round during which other processes kept more than 0.25 of a core busy is thrown away
    and run again (up to `repeat` extra rounds); on_round(kept) hears of each round.
    Stops early (after at least 3 kept rounds) once budget_s seconds have gone by.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    start, kept, tries = time.perf_counter(), 0, 0
    while kept < repeat:
        busy0, own0, wall0 = _cpu_busy()[0], _own_cpu(), time.perf_counter()
        got = {}
        for name in (names if tries % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            fns[name]()
            got[name] = time.perf_counter() - t0
        tries += 1
        others = (_cpu_busy()[0] - busy0 - (_own_cpu() - own0)) / (time.perf_counter() - wall0)
        ok = others < 0.25 or tries > repeat + 3  # past that, a busy machine is the machine we have
        if on_round:
            on_round(ok)
        if ok:
            kept += 1
            for name, t in got.items():
                times[name].append(t)
        else:
            NOISY_ROUNDS[0] += 1
        if budget_s is not None and kept >= 3 and time.perf_counter() - start > budget_s:
            break
    return times


NOISY_ROUNDS = [0]  # rounds thrown away because other processes were busy


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def percentile(xs: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def ms(seconds: float) -> str:
    return "—" if seconds != seconds else (f"{seconds * 1e3:.2f}" if seconds < 0.01 else f"{seconds * 1e3:.1f}")


def ratio(x: float) -> str:
    return "—" if x != x else f"{x:.2f}×"


# ---- output ----

def table(headers: Sequence[str], rows: Sequence[Sequence[object]], title: str | None = None) -> str:
    """A markdown table (printed as it stands, and pasted into bench/README.md)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    lines = ([f"\n### {title}\n"] if title else []) + [fmt(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [fmt(r) for r in cells[1:]]
    text = "\n".join(lines)
    print(text)
    sys.stdout.flush()
    return text


def write_json(path: str | None, facts: dict, results: object) -> None:
    if path:
        Path(path).write_text(json.dumps({"machine": facts, "results": results}, indent=2, default=str) + "\n")
