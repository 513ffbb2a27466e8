"""Live training on the Training page (model/training/live.py, app/serving/live.py, app/pages/live.py): a real job in
its own process, end to end: the curve's events, samples, stop and continue, then the result on the other pages
and as a checkpoint that loads; and the bounds a hostile or careless request meets."""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.serving.engine import Engine
from model.loading import load_model
from model.tokenizers import bytes as byte_tokens
from model.training import live as training

STORIES = Path(__file__).resolve().parent.parent / "model" / "samples" / "tinystories_train.txt"


@pytest.fixture(scope="module")
def settings(tiny_checkpoint: Path) -> Settings:
    return Settings(model=str(tiny_checkpoint))


def wait_for(what, timeout: float = 90.0, every: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = what()
        if found:
            return found
        time.sleep(every)
    raise AssertionError("timed out")


def read_events(client: TestClient, count: int, url: str = "/training/live/events") -> list[tuple[str, str]]:
    """The first `count` events of the page's stream: (name, the data lines joined as EventSource joins them)."""
    events, name, data = [], None, []
    with client.stream("GET", url) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif line == "" and name:
                events.append((name, "\n".join(data)))
                name, data = None, []
                if len(events) == count:
                    break
    return events


# ---------------------------------------------------------------- the engine's part

def test_byte_tokenizer_ids_are_the_bytes(tmp_path: Path) -> None:
    ids = byte_tokens.encode_documents(["hé", "<|endoftext|>"])
    # each document after <|endoftext|>; a typed special token is its bytes
    assert ids.tolist() == [256, 104, 195, 169, 256, *b"<|endoftext|>"]


def test_a_run_learns_and_its_checkpoint_loads_with_the_same_outputs(tmp_path: Path) -> None:
    docs = [d for d in STORIES.read_text(encoding="utf-8").split("<|endoftext|>") if d.strip()]
    run = training.LiveRun(byte_tokens.encode_documents(docs), "tiny")
    before = run.val_loss()
    assert before == pytest.approx(np.log(257), abs=0.1)  # random weights: about a uniform guess
    for _ in range(60):
        run.train_step()
    assert run.val_loss() < before - 1.5  # 60 steps already learn which bytes are common
    assert run.baselines["unigram"] < run.baselines["uniform"]

    path = run.export(tmp_path / "live", {"description": "a test"})
    loaded = load_model(path)
    assert loaded.config.vocab_size == 257 and loaded.tokenizer.eos_id == 256
    text = "Once upon a time, Tom saw a dog."
    ids = loaded.tokenizer.encode(text)
    assert ids == list(text.encode())  # the checkpoint's tokenizer.json reads bytes, id = byte
    x = torch.tensor([[256, *ids]])
    run.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), run.model(x), atol=1e-5, rtol=1e-5)


def test_the_shortest_text_still_trains_and_holds_out_windows() -> None:
    poem = ("Whose woods these are I think I know.\nHis house is in the village though;\n" * 14)[:1000]
    for size in training.SIZES:
        assert training.min_bytes(size) == len(poem.encode())
        run = training.LiveRun(byte_tokens.encode_documents([poem[:-1]]), size)  # with <|endoftext|>: 1,000 ids
        assert len(run.val_ids) > training.SIZES[size].n_ctx + 1  # windows to validate on
        run.train_step()
        assert np.isfinite(run.val_loss())


# ---------------------------------------------------------------- end to end, through the server

def test_a_twenty_step_run_end_to_end(settings: Settings, tmp_path: Path) -> None:
    engine = Engine.load(settings)
    app = create_app(settings, engine)
    with TestClient(app) as client:
        assert client.get("/api/training/live").json()["state"] == "idle"
        idle = read_events(client, 1)
        assert idle[0][0] == "state" and "No model is training" in idle[0][1]

        r = client.post("/training/live/start", data={"text": "stories", "size": "tiny", "minutes": "1",
                                                      "steps": "20"})
        assert r.status_code == 200 and 'data-state="training"' in r.text
        live = app.state.live
        job = live.job
        wait_for(lambda: job.state == "paused" and "live" in app.state.sources.all)
        assert job.why == "steps" and job.step == 20
        assert [p["step"] for p in job.points] == [0, 10, 20]
        assert job.points[-1]["val_loss"] < job.points[0]["val_loss"]
        assert [s["step"] for s in job.samples] == [0, 20]
        info = client.get("/api/training/live").json()  # the page's numbers, as JSON
        assert info["state"] == "paused" and info["why"] == "steps" and info["parameters"] == 834_432
        assert [p["step"] for p in info["points"]] == [0, 10, 20] and info["model"] == job.export.name
        assert info["baselines"]["uniform"] == pytest.approx(np.log(257))

        # a page joining now gets the run as it is: its state, then the curve and the samples
        (state_name, state), (progress_name, progress) = read_events(client, 2)
        assert state_name == "state" and "Done: the steps asked for are trained" in state
        assert 'href="/inference?model=live"' in state and "checkpoint.zip" in state
        assert progress_name == "progress" and 'id="live-chart"' in progress
        assert "after 20 steps" in progress and "a uniform guess: ln 257 = 5.55" in progress

        # continue: the steps carry on from 20, none lost, none repeated
        r = client.post("/training/live/continue", data={"minutes": "1", "steps": "10"})
        assert r.status_code == 200
        wait_for(lambda: job.state == "training")
        wait_for(lambda: job.state == "paused" and app.state.sources.all["live"].engine.loaded.path == job.export)
        assert job.step == 30 and [p["step"] for p in job.points][-2:] == [20, 30]

        # stop: a run of a whole minute, stopped at once
        client.post("/training/live/continue", data={"minutes": "1"})
        wait_for(lambda: job.step > 30 or job.state == "training")
        r = client.post("/training/live/stop")
        assert r.status_code == 200
        wait_for(lambda: job.state == "paused", timeout=30)
        assert job.why == "stopped" and job.trained_s() < 40

        # the result is a model of its own on the other pages
        wait_for(lambda: app.state.sources.all["live"].engine.loaded.path == job.export)
        page = client.get("/inference?model=live")
        assert page.status_code == 200 and job.export.name in page.text
        assert client.get("/internals?model=live").status_code == 200
        scored = client.post("/partials/loss", data={"text": "Once upon a time", "model": "live"})
        assert scored.status_code == 200 and "loss-" in scored.text

        # and downloads as a checkpoint that loads, with the live model's outputs
        z = client.get("/training/live/checkpoint.zip")
        assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
        archive = zipfile.ZipFile(io.BytesIO(z.content))
        assert {n.split("/")[1] for n in archive.namelist()} >= {"config.json", "model.safetensors", "tokenizer.json",
                                                                 "model_card.json"}
        archive.extractall(tmp_path)
        downloaded = load_model(tmp_path / job.export.name)  # as `--model` loads it
        served = app.state.sources.all["live"].engine.loaded.model
        x = torch.tensor([[256, *b"Once upon a time"]])
        with torch.no_grad():
            torch.testing.assert_close(downloaded.model(x), served(x))
        card = json.loads((tmp_path / job.export.name / "model_card.json").read_text())
        assert card["training"]["steps"] == job.step and card["training"]["size"] == "tiny"
        assert "children's stories" in card["description"] and card["evaluation"]["val_loss"] < 5


def test_the_bounds(settings: Settings, client: TestClient) -> None:
    def refused(data: dict, status: int, words: str) -> None:
        r = client.post("/training/live/start", data=data)
        assert r.status_code == status and re.search(words, r.text, re.I), r.text

    refused({"text": "pasted", "pasted": "   "}, 422, "Paste a text to train on")
    refused({"text": "pasted", "pasted": "The cat sat. " * 50}, 422, r"650 bytes; a live run needs at least 1,000")
    refused({"text": "pasted", "pasted": "\x00\x01\x02binary" * 1000}, 422, "binary data, not text")
    refused({"text": "pasted", "size": "huge"}, 422, "size must be one of tiny, small")
    refused({"text": "stories", "minutes": "60"}, 422, "minutes must be one of 1, 2, 3, 4, 5")
    refused({"text": "../../etc/passwd"}, 422, "text must be one of stories, oz, pasted")
    # just over 1 MB as one multipart field: the route's own sentence
    r = client.post("/training/live/start", files={"text": (None, "pasted"), "pasted": (None, "a" * 1_000_500)})
    assert r.status_code == 413 and "1,000,500 bytes; a live run takes at most 1,000,000" in r.text
    # far over: the server turns the body away before reading it
    r = client.post("/training/live/start", files={"text": (None, "pasted"), "pasted": (None, "a" * 2_000_000)})
    assert r.status_code == 413 and "accepts at most 1,040,000" in r.text
    r = client.post("/training/live/continue", data={"minutes": "1"})
    assert r.status_code == 409 and "no stopped run to continue" in r.text
    assert client.get("/training/live/checkpoint.zip").status_code == 404


def test_a_run_whose_process_dies_says_so(settings: Settings, client: TestClient) -> None:
    live = client.app.state.live
    r = client.post("/training/live/start", data={"text": "stories", "minutes": "1"})
    assert r.status_code == 200
    wait_for(lambda: live.job.points[1:])  # stepping
    live._process.kill()  # as the machine's out-of-memory killer would
    wait_for(lambda: live.job.state == "failed", timeout=30)
    (_, state), _ = read_events(client, 2)
    assert "The run failed: the training process ended unexpectedly" in state
    r = client.post("/training/live/start", data={"text": "stories", "minutes": "1", "steps": "10"})
    assert r.status_code == 200  # a failed run does not block the next
    wait_for(lambda: live.job.state == "paused")


# last in the module: its class session stays live, and then only a teacher may start a run
def test_one_run_at_a_time_and_a_class_run_is_the_teachers(settings: Settings, client: TestClient) -> None:
    teacher = client
    r = teacher.post("/class", data={"prompt": "Once upon a time"}, follow_redirects=False)
    assert r.status_code in (200, 303)
    code = teacher.app.state.live  # the app's job holder
    r = teacher.post("/training/live/start", data={"text": "oz", "size": "tiny", "minutes": "1"})
    assert r.status_code == 200 and "started by the teacher of class" in r.text
    try:
        other = TestClient(teacher.app)  # another browser: no teacher cookie
        r = other.post("/training/live/start", data={"text": "stories", "minutes": "1"})
        assert r.status_code == 409
        assert re.search(r"the teacher of class \w+ started it \d+ s ago \(tiny, on The Wonderful Wizard of Oz", r.text)
        r = other.post("/training/live/stop")
        assert r.status_code == 403 and "only the teacher's browser starts, stops or continues" in r.text
        assert code.job.state == "training"
        # the class's phones see the run, without its controls; another class's see nothing
        mine = f"/training/live/events?watching=1&class_code={code.job.class_code.lower()}"
        (_, state), (_, progress) = read_events(other, 2, mine)
        assert "started by the teacher of class" in state and "Stop" not in state and "live-figures" in progress
        (_, state), (_, progress) = read_events(other, 2, "/training/live/events?watching=1&class_code=ZZZZZZ")
        assert state == "" and progress == ""
    finally:
        teacher.post("/training/live/stop")
        wait_for(lambda: code.job.state == "paused", timeout=60)
