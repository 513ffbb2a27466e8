"""Every benchmark command runs, end to end, with tiny settings (a 2-layer random model, a few tokens).

They measure nothing here: the point is that `python -m bench.X` keeps working as the
code it drives changes. Each runs in its own process, as from the README, all at once to
keep the check short; the ones that need a server start a real one on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ["prefill", "decode", "decode_llama", "activations", "tokenize", "load", "soak", "classroom", "interventions",
            "live", "ab"]
MORE = {"ab": ["--before", str(ROOT), "activations"]}  # A/B against this same checkout


def test_every_bench_command_runs(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {}
    for name in COMMANDS:
        out = tmp_path / f"{name}.json"
        log = open(tmp_path / f"{name}.log", "w+")  # a file, not a pipe: nothing blocks on a full buffer
        cmd = [sys.executable, "-m", f"bench.{name}", "--models", "tiny", "--quick", "--threads", "1", "--json", str(out),
               *MORE.get(name, [])]
        procs[name] = (subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log, out)
    failed = {}
    for name, (proc, log, out) in procs.items():
        try:
            code = proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = "timed out"
        log.seek(0)
        text = log.read()
        log.close()
        if code != 0 or "| " not in text or not out.is_file() or not json.loads(out.read_text())["results"]:
            failed[name] = f"exit {code}:\n{text[-3000:]}"
    assert not failed, "\n\n".join(f"bench.{k}: {v}" for k, v in failed.items())
