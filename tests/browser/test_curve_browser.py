"""The Data page's training curve at the projector's size (1366×768), on a log that has what a retrained model's
log carries: two other validation sources, stages whose marks sit close together, evaluation records with a
training `phase`, and the training loss on natural text alone. Screenshot: /tmp/shots/curve-data.png."""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from app.config import Settings
from app.serving.engine import Engine
from app.main import create_app
from live_server import serve

pytestmark = pytest.mark.browser


def strict_csp():
    """The browser conftest's StrictCSP middleware (loaded by path: "conftest" names two modules in this suite)."""
    spec = importlib.util.spec_from_file_location("browser_conftest", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.StrictCSP


def record(s: int) -> dict:
    jump = 1.8 if s > 400 else 0.0  # the synthetic rows of stages 3 on score differently
    return {"step": s, "tokens": s * 4096, "train_loss": round(2.5 + 8 / (1 + s / 60) + jump, 3),
            "train_loss_natural": round(2.5 + 8 / (1 + s / 60), 3), "val_loss": round(2.6 + 8 / (1 + s / 60), 3),
            "val_losses": {"named": round(3.1 + 8 / (1 + s / 60), 3), "tales": round(3.4 + 8 / (1 + s / 60), 3)},
            "phase": "A" if s <= 700 else "B"}


@pytest.fixture(scope="module")
def server_url(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("curve") / "deepdive-curve"
    shutil.copytree(tiny_checkpoint, path)
    (path / "training_log.jsonl").write_text("".join(json.dumps(record(s)) + "\n" for s in range(100, 1001, 100)))
    stages = [{"steps": 300, "weights": {"tinystories": 0.6, "tales": 0.4}},
              {"steps": 100, "weights": {"tinystories": 0.45, "named": 0.35, "tales": 0.2}},
              {"steps": 600, "weights": {"tinystories": 0.45, "named": 0.35, "tales": 0.2}}]
    (path / "model_card.json").write_text(json.dumps({"description": "A tiny random model.",
                                                      "training": {"stages": stages}}))
    settings = Settings(model=str(path))
    app = create_app(settings, Engine.load(settings))
    app.add_middleware(strict_csp())
    with serve(app) as url:
        yield url


@pytest.mark.parametrize("sized", ["projector"], indirect=True)
def test_the_curve_marks_its_phase_and_tells_its_series_apart(sized: Page) -> None:
    page = sized
    page.goto("/data")
    chart = page.locator("#curve-chart")
    chart.locator("polyline.series").first.wait_for()
    chart.scroll_into_view_if_needed()
    page.screenshot(path="/tmp/shots/curve-data.png")
    # each validation source its own style, named in the legend
    styles = chart.evaluate("""svg => [...svg.querySelectorAll('polyline.series')].map(p => {
        const s = getComputedStyle(p); return s.stroke + '|' + s.strokeDasharray; })""")
    assert len(styles) == 5 and len(set(styles)) == 5, styles  # train, natural, val, named, tales
    legend = page.locator("#curve-h ~ ul.legend li").all_inner_texts()
    assert "training loss (natural text only)" in legend
    assert "validation loss (named)" in legend and "validation loss (tales)" in legend
    # the phase's change is a labelled line, beside the stages'
    labels = chart.evaluate("""svg => [...svg.querySelectorAll('.mark text')].map(t => {
        const b = t.getBBox(); return {text: t.textContent, x: b.x, y: b.y, w: b.width, h: b.height}; })""")
    assert [m["text"] for m in labels] == ["stage 2", "stage 3", "phase B"]
    # no two labels overprint
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            apart = a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"] or a["y"] + a["h"] <= b["y"] \
                or b["y"] + b["h"] <= a["y"]
            assert apart, (a, b)
    expect(chart.locator(".mark.phase line")).to_have_count(1)
    # the CSV holds what the chart shows
    csv = page.request.get("/download/training-curve.csv").text().splitlines()
    assert csv[0].endswith("train_loss_natural,phase") and csv[-1].endswith(",B")
