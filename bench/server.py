"""A real server for the endpoint benchmarks: `python -m app` on 127.0.0.1 and a free port, as a child process.

Start-up time is measured from launching the process to the first 200 from /healthz.
Resident memory is read from /proc (psutil when installed). The server is stopped
(SIGINT, as Ctrl-C, then SIGKILL if it hangs) however the benchmark ends.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import ROOT

HOST = "127.0.0.1"  # only ever the loopback interface


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model: Path, threads: int | None = None, start_timeout_s: float = 90,
                 env: dict[str, str] | None = None, root: Path = ROOT):
        self.model = model
        self.root = root  # the checkout whose app is served (bench.ab serves two, a commit's worktree and this)
        self.threads = threads  # DEEPDIVE_THREADS for the server; None leaves the app's default
        self.env = env or {}  # more settings for the server (DEEPDIVE_... variables)
        self.start_timeout_s = start_timeout_s
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None
        self.log = Path(tempfile.mkstemp(prefix="deepdive-bench-server-", suffix=".log")[1])

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        env = {**os.environ, **self.env}
        if self.threads:
            env["DEEPDIVE_THREADS"] = str(self.threads)
        cmd = [sys.executable, "-m", "app", "--host", HOST, "--port", str(self.port), "--model", str(self.model)]
        t0 = time.perf_counter()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = t0 + self.start_timeout_s
        with httpx.Client(timeout=1.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the server exited with {self.proc.returncode} before serving:\n{self.tail()}")
                try:
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.perf_counter() > deadline:
                    self.stop()
                    raise RuntimeError(f"the server did not answer /healthz within {self.start_timeout_s:.0f} s:\n"
                                       f"{self.tail()}")
                time.sleep(0.01)
        self.startup_s = time.perf_counter() - t0

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def rss_mib(self) -> float:
        """The server's resident memory now, MiB."""
        return self._status("VmRSS")

    def peak_rss_mib(self) -> float:
        """The most resident memory the server has held since it started, MiB."""
        return self._status("VmHWM")

    def _status(self, field: str) -> float:
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        try:  # not Linux: psutil, if installed, knows the current figure
            import psutil
            return psutil.Process(self.proc.pid).memory_info().rss / 2**20
        except Exception:  # noqa: BLE001 - memory is reported as unknown
            return float("nan")

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""
