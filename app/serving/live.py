"""The live training job (model/training/live.py) as the server holds it: one at a time, in its own process, its
progress kept here for every page that watches it, and each sitting's result loaded as a model of its own ("live").

The job's process sends events over a Pipe; a reader thread hands them to the event loop, where Job.apply keeps
the curve, the samples and the state, and wakes the watchers (Job.changed). When a sitting ends the weights are
exported to a folder of this server's own and loaded as the "live" source, beside the loaded model.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import Depends, Request

from app.config import Settings
from app.problems import Problem
from app.serving.engine import Engine
from app.serving.sources import LIVE, LocalSource, Sources
from app.templating import si
from model.loading import load_model
from model.training import live as training

MAX_TEXT_BYTES = 1_000_000
# the start form's body: the pasted text as one multipart field, room for the other fields, and under the
# multipart parser's own limit on one field (1 MiB), so a longer text meets our sentence, not the parser's
LIVE_PATH, LIVE_BODY_BYTES = "/training/live/start", 1_040_000
BUDGETS_MIN = (1, 2, 3, 4, 5)
MAX_RUN_MIN = 30  # one run's training time over all its sittings: its curve and samples stay small
GRACE_S = 60.0  # a sitting still training this long after its time (starting the process takes seconds) is ended


@dataclass(frozen=True)
class Plan:
    """What the teacher asked for."""

    text_name: str          # as the page names the text
    documents: list[str]
    size: str
    minutes: int
    steps: int | None = None  # stop after this many steps (a script's or a test's short run)


@dataclass
class Job:
    plan: Plan
    who: str                      # who started it, in words ("the teacher of class ABCD", "a browser at 1.2.3.4")
    class_code: str | None        # a class's run: only its teacher stops or continues it
    started: float = field(default_factory=time.time)
    state: str = "training"       # training (its process starting, then stepping), paused, failed, closed
    why: str | None = None        # why it paused: stopped, time, steps
    ready: dict = field(default_factory=dict)
    points: list[dict] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)
    error: str | None = None
    sitting_ends: float | None = None  # wall-clock end of the sitting in progress
    sittings: int = 0
    export: Path | None = None    # the last sitting's checkpoint, loaded as the live model
    version: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def apply(self, event: dict) -> None:
        kind = event["event"]
        if kind == "ready":
            self.ready = event
        elif kind == "point":  # a sitting's end may send its last step again, with the validation loss
            self.points = [p for p in self.points if p["step"] != event["step"]] + [event]
        elif kind == "sample":
            self.samples = [s for s in self.samples if s["step"] != event["step"]] + [event]
        elif kind == "paused":
            self.state, self.why, self.sitting_ends = "paused", event["why"], None
        elif kind == "failed":
            self.state, self.error = "failed", event["message"]
        self.touch()

    def touch(self) -> None:
        """Wake everything watching; each watcher then reads the job as it is now."""
        self.version += 1
        self.changed.set()
        self.changed = asyncio.Event()

    @property
    def step(self) -> int:
        return self.points[-1]["step"] if self.points else 0

    @property
    def last(self) -> dict | None:
        return self.points[-1] if self.points else None

    def left_s(self) -> float:
        return max(0.0, self.sitting_ends - time.time()) if self.sitting_ends else 0.0

    def trained_s(self) -> float:
        return self.points[-1]["elapsed_s"] if self.points else 0.0

    def sentence(self) -> str:
        """Who is training and for how long, for whoever asks to start another."""
        ago = time.time() - self.started
        left = f", {duration(self.left_s())} left" if self.state == "training" else ""
        return (f"A model is already training here: {self.who} started it {duration(ago)} ago ({self.plan.size}, "
                f"on {self.plan.text_name}, step {self.step:,}{left}). Watch it below; one run at a time.")


def duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"


class Refused(Problem):
    status = 409


class LiveTraining:
    """The server's one live training job: start, stop, continue; its process and its "live" model."""

    def __init__(self, settings: Settings, sources: Sources):
        self.settings = settings
        self.sources = sources
        self.job: Job | None = None
        self.folder = Path(tempfile.mkdtemp(prefix="deepdive-live-"))
        self._process: subprocess.Popen | None = None
        self._runs = 0
        self._lock = asyncio.Lock()

    # ---- commands

    async def start(self, plan: Plan, who: str, class_code: str | None) -> Job:
        async with self._lock:
            self.refuse_if_busy()
            await self._close_process()
            self._runs += 1
            job = self.job = Job(plan, who, class_code)
            spec = self.folder / f"run{self._runs}.json"
            spec.write_text(json.dumps({"documents": plan.documents, "size": plan.size}), encoding="utf-8")
            # a fresh interpreter: none of the server's threads, torch settings or memory come along
            self._process = subprocess.Popen([sys.executable, "-m", "model.training.live", str(spec)],
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8")
            threading.Thread(target=self._read, args=(self._process, job, asyncio.get_running_loop()),
                             name="live-training-reader", daemon=True).start()
            self._train(job, plan.minutes, plan.steps)
            return job

    def refuse_if_busy(self) -> None:
        """One run at a time: a second is told who is training and for how long."""
        if self.job is not None and self.job.state == "training":
            raise Refused(self.job.sentence())

    async def stop(self) -> None:
        if self.job is not None and self.job.state == "training":
            self._send({"do": "stop"})

    async def resume(self, minutes: int, steps: int | None = None) -> Job:
        async with self._lock:
            job = self.job
            if job is None or job.state != "paused":
                raise Refused("There is no stopped run to continue: start one first" if job is None or
                              job.state in ("failed", "closed") else job.sentence())
            trained_min = job.trained_s() / 60
            if trained_min + minutes > MAX_RUN_MIN:
                raise Refused(f"This run has trained {duration(job.trained_s())}; one run trains at most "
                              f"{MAX_RUN_MIN} minutes in all: continue for less, or start a new one")
            self._train(job, minutes, steps)
            return job

    def _train(self, job: Job, minutes: int, steps: int | None) -> None:
        job.state, job.why, job.sittings = "training", None, job.sittings + 1
        job.sitting_ends = time.time() + minutes * 60
        self._send({"do": "train", "seconds": minutes * 60, "steps": steps})
        asyncio.get_running_loop().call_later(minutes * 60 + GRACE_S, self._overdue, job, job.sittings)
        job.touch()

    def _overdue(self, job: Job, sitting: int) -> None:
        """The time budget holds even if the job's process does not: one still training past it is ended."""
        if job is self.job and job.state == "training" and job.sittings == sitting and self._process is not None:
            self._process.kill()
            job.apply({"event": "failed", "message": "it went on past its time and was ended"})

    def _send(self, command: dict) -> None:
        try:
            self._process.stdin.write(json.dumps(command) + "\n")
            self._process.stdin.flush()
        except (OSError, AttributeError, ValueError):  # the process is gone: the reader has said so already
            pass

    # ---- the job's events, on the reader thread, then on the loop

    def _read(self, process: subprocess.Popen, job: Job, loop: asyncio.AbstractEventLoop) -> None:
        for line in process.stdout:
            loop.call_soon_threadsafe(self._on_event, job, json.loads(line))
        loop.call_soon_threadsafe(self._on_event, job, {"event": "failed",
                                                        "message": "the training process ended unexpectedly"})

    def _on_event(self, job: Job, event: dict) -> None:
        if job is not self.job or job.state in ("closed", "failed"):
            return
        job.apply(event)
        if event["event"] == "paused":
            job.export = self.folder / f"live-run{self._runs}-step{job.step}"
            self._send({"do": "export", "path": str(job.export), "card": self.card(job)})
        elif event["event"] == "exported":
            asyncio.get_running_loop().create_task(self._load(job, Path(event["path"])))

    async def _load(self, job: Job, path: Path) -> None:
        """The sitting's checkpoint as the "live" model (its own model thread); the one before it is let go."""
        engine = await anyio.to_thread.run_sync(lambda: Engine(load_model(path), self.settings))
        if job is not self.job or job.state == "closed":
            return
        engine.start()
        old = self.sources.put(LocalSource(LIVE, engine))
        if old is not None:
            old.engine.stop()
            shutil.rmtree(old.engine.loaded.path, ignore_errors=True)
        job.touch()

    def card(self, job: Job) -> dict:
        last = job.last or {}
        size = training.SIZES[job.plan.size]
        return {
            "description": (f"Trained live on {job.plan.text_name} in Deep Dive: {job.plan.size} "
                            f"({si(job.ready.get('parameters', 0))} parameters: {size.n_layer} layers, "
                            f"{size.n_embd} wide, {size.n_ctx} bytes of context), {job.step:,} steps, "
                            f"{duration(last.get('elapsed_s', 0.0))} of training. It reads bytes."),
            "training": {"steps": job.step, "tokens_seen": last.get("tokens", 0), "text": job.plan.text_name,
                         "size": job.plan.size, "seconds": last.get("elapsed_s", 0.0),
                         "train_tokens": job.ready.get("train_tokens"), "val_tokens": job.ready.get("val_tokens")},
            "evaluation": {"val_loss": next((p["val_loss"] for p in reversed(job.points)
                                             if p.get("val_loss") is not None), None),
                           "baselines": job.ready.get("baselines", {})},
        }

    # ---- the end

    async def _close_process(self) -> None:
        if self.job is not None:
            self.job.state = "closed"
            self.job.touch()
        if self._process is not None:
            self._send({"do": "close"})
            process = self._process
            try:
                await anyio.to_thread.run_sync(lambda: process.wait(5))
            except subprocess.TimeoutExpired:
                process.kill()
        self._process = None

    async def close(self) -> None:
        await self._close_process()
        live = self.sources.put(None)
        if live is not None:
            live.engine.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def get_live(request: Request) -> LiveTraining:
    return request.app.state.live


LiveDep = Annotated[LiveTraining, Depends(get_live)]
