"""The training pipeline: data preparation, a loss that falls, and an exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model.loading import load_model
from model.tokenizers.tokenizer import EOT, EOT_ID, gpt2_encoding
from model.training.train import main as train_main
from model.training.corpus import documents
from model.training.data import SourceSpec, prepare

SAMPLES = Path(__file__).resolve().parent.parent / "model" / "samples"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data")
    prepare([SourceSpec("stories", 3.0, [str(SAMPLES / "tinystories_train.txt")]),
             SourceSpec("oz", 1.0, [str(SAMPLES / "wizard_of_oz_excerpt.txt")])],
            held_out={"stories": [str(SAMPLES / "tinystories_valid.txt")]}, out=out, val_fraction=0.5)
    return out


def test_documents_split_on_endoftext_lines(tmp_path):
    f = tmp_path / "two.txt"
    f.write_text(f"First story.\n{EOT}\nSecond story,\ntwo lines.\n{EOT}\n")
    assert documents(f) == ["First story.", "Second story,\ntwo lines."]
    g = tmp_path / "book.txt"
    g.write_text("A whole book is one document.\n\nChapter two.\n")
    assert documents(g) == ["A whole book is one document.\n\nChapter two."]


def test_prepare_round_trips_and_splits_by_document(data):
    meta = json.loads((data / "meta.json").read_text())
    enc = gpt2_encoding()
    stories = documents(SAMPLES / "tinystories_train.txt")
    train = np.fromfile(data / "stories.train.bin", dtype=np.uint16)
    # decoding the token file gives back the documents, each closed by <|endoftext|>
    assert enc.decode(train.tolist()) == "".join(d + EOT for d in stories)
    assert meta["sources"]["stories"]["train_documents"] == len(stories)
    held = np.fromfile(data / "stories.val.bin", dtype=np.uint16)
    assert enc.decode(held.tolist()) == "".join(d + EOT for d in documents(SAMPLES / "tinystories_valid.txt"))
    # a source without a held-out file gives whole documents to validation: here its one
    # document cannot be split, so it all stays in training
    assert meta["sources"]["oz"]["val_tokens"] == 0
    assert int(train[-1]) == EOT_ID


def run(data: Path, out: Path, *extra: str) -> list[dict]:
    train_main(["run", "--data", str(data), "--out", str(out), "--n-layer", "2", "--n-head", "2",
                "--n-embd", "32", "--n-ctx", "32", "--batch-size", "4", "--max-steps", "12",
                "--warmup-steps", "2", "--lr", "1e-2", "--eval-interval", "4", "--eval-batches", "2",
                "--sample-interval", "12", "--checkpoint-interval", "4", "--dtype", "fp32",
                "--main-val", "stories", "--threads", "1", *extra])
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_training_lowers_the_loss_and_exports_a_loadable_checkpoint(data, tmp_path):
    log = run(data, tmp_path / "run", "--export", str(tmp_path / "export"), "--export-dtype", "fp32")
    evals = [r for r in log if "val_loss" in r]
    assert [r["step"] for r in evals] == [4, 8, 12]
    # the log opens with what the untrained model wrote, for the Data page to set beside the end
    assert log[0]["step"] == 0 and log[0]["tokens"] == 0 and "Once upon a time" in log[0]["samples"]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.3
    assert evals[-1]["train_loss"] < evals[0]["train_loss"]
    assert "samples" in log[-1] and log[-1]["samples"]["Once upon a time"].startswith("Once upon a time")
    loaded = load_model(tmp_path / "export")
    assert loaded.config.n_layer == 2 and loaded.config.n_ctx == 32
    assert (tmp_path / "export" / "training_log.jsonl").exists()


def test_an_interrupted_run_resumes_at_the_same_step_with_the_same_data(data, tmp_path):
    whole = run(data, tmp_path / "whole")
    first = run(data, tmp_path / "parts", "--stop-after", "6")
    assert max(r["step"] for r in first) == 4  # evaluations at 4; the sitting stopped at step 6
    assert torch.load(tmp_path / "parts" / "ckpt.pt", weights_only=True)["step"] == 6
    resumed = run(data, tmp_path / "parts")
    assert [r["step"] for r in resumed] == [r["step"] for r in whole]
    for a, b in zip(whole[1:], resumed[1:]):  # after the untrained model's samples, logged once
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)
    w1 = torch.load(tmp_path / "whole" / "ckpt.pt", weights_only=True)["model"]
    w2 = torch.load(tmp_path / "parts" / "ckpt.pt", weights_only=True)["model"]
    for name in w1:
        torch.testing.assert_close(w1[name], w2[name], atol=1e-6, rtol=0)


def test_a_second_stage_starts_from_the_first_runs_best_weights_and_carries_its_log_on(data, tmp_path):
    first = run(data, tmp_path / "first")
    best = torch.load(tmp_path / "first" / "best.pt", weights_only=True)
    second = run(data, tmp_path / "second", "--init-from", str(tmp_path / "first"), "--lr", "1e-3",
                 "--dropout", "0.1", "--stop-after", "4")
    # the log opens with the first stage's records up to its best weights, then counts on from there
    kept = [r for r in first if r["step"] <= best["step"]]
    assert second[:len(kept)] == kept
    assert [r["step"] for r in second[len(kept):]] == [best["step"] + 4]
    assert second[-1]["tokens"] == kept[-1]["tokens"] + 4 * 4 * 32
    # at a small learning rate, the second stage starts near where the first one's best weights were
    assert second[-1]["val_loss"] < first[1]["val_loss"]
    # and it resumes like any run: the finished sitting's log is kept, not restarted from the first stage's
    resumed = run(data, tmp_path / "second", "--init-from", str(tmp_path / "first"), "--lr", "1e-3", "--dropout", "0.1")
    assert [r["step"] for r in resumed if "val_loss" in r] == [r["step"] for r in kept if "val_loss" in r] + [
        best["step"] + 4 * i for i in (1, 2, 3)]


def test_a_second_stage_refuses_weights_of_another_shape(data, tmp_path):
    run(data, tmp_path / "first", "--stop-after", "4")
    with pytest.raises(SystemExit, match="its model is"):
        run(data, tmp_path / "second", "--init-from", str(tmp_path / "first"), "--n-embd", "64")
