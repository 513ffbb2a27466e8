"""Every figure's "Download PNG" and "Download CSV" in real headless Chromium, behind the strict CSP.

The PNG is drawn in the browser (static/js/figures.js): the saved file must be a PNG at twice the figure's
size, holding the figure's own colours (which come from the page's CSS, so they prove the styles travelled
with it). The CSV comes from the server with the state the page shows. No request may leave the server.
Fixtures are tests/browser/conftest.py's: a console error (a CSP violation among them) fails the test.
"""

from __future__ import annotations

import base64
import re
import struct
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, expect

from helpers import heatmap_cells
from model.tokenizers.tokenizer import gpt2_tokenizer

pytestmark = pytest.mark.browser
expect.set_options(timeout=30_000)
PAD = 12  # figures.js: CSS pixels of margin around a figure
PROMPT = 'The cat, "Tom", sat'  # a comma and quotes in the tokens
N = len(gpt2_tokenizer().encode(PROMPT))


@pytest.fixture
def requests(page: Page) -> list[str]:
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url))
    return seen


def same_origin(requests: list[str], server_url: str) -> None:
    strays = [u for u in requests if not (u.startswith(server_url + "/") or u.startswith(("data:", "blob:")))]
    assert requests and not strays, strays


def save_png(page: Page, figure: str, tmp_path: Path) -> tuple[bytes, str]:
    """Click the figure's "Download PNG"; the file's bytes and its suggested name."""
    button = page.locator(f'[data-figure-png="{figure}"]')
    expect(button).to_be_visible()
    with page.expect_download() as info:
        button.click()
    download = info.value
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    expect(button).to_be_enabled()
    assert not any(t.strip() for t in page.locator(".figure-status").all_inner_texts())  # no error shown
    return path.read_bytes(), download.suggested_filename


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    return struct.unpack(">II", data[16:24])


def check_png(page: Page, figure: str, data: bytes, colours: list[str]) -> None:
    """Twice the figure's size (plus the margin), and the named colours among its pixels."""
    width, height = png_size(data)
    box = page.locator(figure).bounding_box()
    assert abs(width - 2 * (box["width"] + 2 * PAD)) <= 4 and height >= 2 * (box["height"] + 2 * PAD) - 4, \
        (width, height, box)
    found = page.evaluate("""async ([b64, want]) => {
        const img = new Image();
        img.src = "data:image/png;base64," + b64;
        await img.decode();
        const c = document.createElement("canvas");
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        const ctx = c.getContext("2d");
        ctx.drawImage(img, 0, 0);
        const px = ctx.getImageData(0, 0, c.width, c.height).data;
        const seen = new Set();
        for (let i = 0; i < px.length; i += 4) {
          seen.add("#" + [px[i], px[i + 1], px[i + 2]].map(v => v.toString(16).padStart(2, "0")).join(""));
        }
        return {distinct: seen.size, found: want.filter(w => seen.has(w))};
    }""", [base64.b64encode(data).decode(), colours])
    assert found["distinct"] > 20, found  # a picture, not a blank
    assert found["found"] == colours, found


def difference(page: Page, figure: str, data: bytes) -> tuple[float, float]:
    """How far the PNG (its margin cut) is from a screenshot of the figure as the page shows it, both shrunk to
    a quarter of the page's size (so a glyph's edge a pixel off does not count, a row or a column out of place
    does), as the mean difference of the pixels' channels (0: the same, 1: black for white), and how far a
    blank picture would be (the screenshot's ink). The picture may start a few pixels lower: a block figure
    keeps the margin its first child lets fall outside it on the page."""
    page.mouse.move(0, 0)  # no hover state in the screenshot
    shot = page.locator(figure).screenshot()
    diff, ink = page.evaluate("""async ([mine, shown, pad]) => {
        async function load(b64) {
          const img = new Image();
          img.src = "data:image/png;base64," + b64;
          await img.decode();
          return img;
        }
        const a = await load(mine), b = await load(shown);
        const W = b.naturalWidth, H = b.naturalHeight, w = Math.ceil(W / 4), h = Math.ceil(H / 4);
        function pixels(img, sx, sy, sw, sh) {
          const c = document.createElement("canvas");
          c.width = w; c.height = h;
          const ctx = c.getContext("2d");
          ctx.fillStyle = "#ffffff";
          ctx.fillRect(0, 0, w, h);
          ctx.drawImage(img, sx, sy, sw, sh, 0, 0, w, h);
          return ctx.getImageData(0, 0, w, h).data;
        }
        const pb = pixels(b, 0, 0, W, H);
        let ink = 0;
        for (let i = 0; i < pb.length; i += 4) ink += 3 * 255 - pb[i] - pb[i + 1] - pb[i + 2];
        let best = Infinity;
        for (let dy = 0; dy <= 12; dy++) {
          const pa = pixels(a, 2 * pad, 2 * (pad + dy), 2 * W, 2 * H);
          let sum = 0;
          for (let i = 0; i < pa.length; i += 4) {
            sum += Math.abs(pa[i] - pb[i]) + Math.abs(pa[i + 1] - pb[i + 1]) + Math.abs(pa[i + 2] - pb[i + 2]);
          }
          best = Math.min(best, sum);
        }
        return [best / (w * h * 3 * 255), ink / (w * h * 3 * 255)];
    }""", [base64.b64encode(data).decode(), base64.b64encode(shot).decode(), PAD])
    return diff, ink


def looks_as_shown(page: Page, figure: str, data: bytes) -> None:
    """The picture is the figure as the page shows it: far closer to the screenshot than a blank would be
    (what differences remain are the edges of text and lines, drawn at twice the size and halved)."""
    diff, ink = difference(page, figure, data)
    assert diff < 0.5 * ink, (diff, ink)


def save_csv(page: Page, link_selector: str, tmp_path: Path) -> list[str]:
    link = page.locator(link_selector)
    with page.expect_download() as info:
        link.click()
    download = info.value
    assert download.suggested_filename.startswith("deepdive-") and download.suggested_filename.endswith(".csv")
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    return path.read_text(encoding="utf-8").splitlines()


def query(page: Page, link_selector: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.locator(link_selector).get_attribute("href")).query)


# ---------------------------------------------------------------- internals: attention and logit lens

def test_internals_figures(page: Page, requests: list[str], server_url: str, tmp_path: Path) -> None:
    page.goto("/internals")
    page.locator("#int-prompt").fill(PROMPT)
    expect(page.locator("#int-lens [role=columnheader]")).to_have_count(1 + N)
    page.locator("label.lab-head").nth(2).click()
    page.select_option("#int-layer", "0")
    shown = "#int-attn .attn-map:visible"  # every head is drawn; the checked one shows
    expect(page.locator(shown)).to_have_attribute("aria-label", "Attention pattern of block 0, head 2")
    expect(page.locator(shown + " [data-r]")).to_have_count(N)
    assert heatmap_cells(page.locator(shown)) == N * (N + 1) // 2

    data, name = save_png(page, "#int-attn .attn-map", tmp_path)
    assert name == "deepdive-attention-pattern-of-block-0-head-2.png"  # the shown head's title
    check_png(page, shown, data, [])
    looks_as_shown(page, shown, data)
    # the CSV link follows the prompt, block and head drawn
    assert query(page, "#int-attn-csv a:visible") == {"prompt": [PROMPT], "layer": ["0"], "head": ["2"]}
    lines = save_csv(page, "#int-attn-csv a:visible", tmp_path)
    assert lines[0] == "position,token," + ",".join(f"key {k}" for k in range(N)) and len(lines) == 1 + N

    data, name = save_png(page, "#int-lens", tmp_path)
    assert name == "deepdive-logit-lens.png"
    check_png(page, "#int-lens", data, ["#f5f8fe"])  # lab.css's palest lens shade: the page's CSS came along
    looks_as_shown(page, "#int-lens", data)
    assert query(page, "#int-lens-csv") == {"prompt": [PROMPT]}
    lines = save_csv(page, "#int-lens-csv", tmp_path)
    assert lines[0] == "state,position,token,top_guess,probability" and len(lines) == 1 + 3 * N
    same_origin(requests, server_url)


# ---------------------------------------------------------------- inference: the bars

def test_inference_figure(page: Page, requests: list[str], server_url: str, tmp_path: Path) -> None:
    page.goto("/inference?prompt=Once%20upon%20a%20time&n=5&present=1")  # presentation mode: larger type
    bars = page.locator("#inf-bars button.lab-bar")
    expect(bars).to_have_count(5)
    bars.nth(1).click()  # a step by hand: the link must carry it
    expect(page.locator("#inf-history tr")).to_have_count(1)
    expect(page.locator("#inf-figure-tools a")).to_have_attribute("href", re.compile(r"steps=h\d+"))

    data, name = save_png(page, "#inf-figure", tmp_path)
    assert name == "deepdive-what-could-come-next.png"
    check_png(page, "#inf-figure", data, ["#f0f2f5"])  # the bars' track, from lab.css
    looks_as_shown(page, "#inf-figure", data)
    assert query(page, "#inf-figure-tools a")["n"] == ["5"]
    lines = save_csv(page, "#inf-figure-tools a", tmp_path)
    assert lines[0] == "rank,id,token,model_probability,chance_now" and len(lines) == 1 + 5
    same_origin(requests, server_url)


# ---------------------------------------------------------------- training: the loss colouring

def test_loss_figure(page: Page, requests: list[str], server_url: str, tmp_path: Path) -> None:
    page.goto("/loss")
    page.locator("#loss-figure .chip").first.wait_for()
    page.locator("#loss-text").fill(PROMPT)
    expect(page.locator("#loss-figure .chip")).to_have_count(N)
    expect(page.locator("#loss-csv")).to_have_attribute(
        "href", "/download/loss.csv?text=The+cat%2C+%22Tom%22%2C+sat")

    data, name = save_png(page, "#loss-figure", tmp_path)
    assert name == "deepdive-loss-of-each-token.png"
    check_png(page, "#loss-figure", data, ["#b3161d"])  # the scale's darkest red (and the random model's chips)
    looks_as_shown(page, "#loss-figure", data)
    lines = save_csv(page, "#loss-csv", tmp_path)
    assert lines[0] == "position,id,token,probability,loss_nats,rank,top_guess" and len(lines) == 1 + N

    page.locator("#loss-text").fill("   ")  # a message in place of the figure: nothing to download
    expect(page.locator("#loss-result .message")).to_be_visible()
    expect(page.locator('[data-figure-png="#loss-figure"]')).to_be_hidden()
    same_origin(requests, server_url)


# ---------------------------------------------------------------- data: the training curve

def test_training_curve_figure(page: Page, requests: list[str], server_url: str, tmp_path: Path) -> None:
    page.goto("/data")
    page.locator("#curve-chart polyline.series").first.wait_for()
    data, name = save_png(page, "#curve-chart", tmp_path)
    assert name == "deepdive-training-curve.png"
    check_png(page, "#curve-chart", data, ["#2c52c9", "#d1495b"])  # the series' strokes, set only by CSS classes
    looks_as_shown(page, "#curve-chart", data)
    lines = save_csv(page, ".figure-tools a[href='/download/training-curve.csv']", tmp_path)
    assert lines[0] == "step,tokens,train_loss,val_loss" and len(lines) == 1 + 10
    same_origin(requests, server_url)


# ---------------------------------------------------------------- tokenizer: three vocabularies

def test_compare_figure(page: Page, requests: list[str], server_url: str, tmp_path: Path) -> None:
    page.goto("/tokenizer?text=Hello%2C%20%22world%22")
    expect(page.locator("#cmp-figure section")).to_have_count(3)
    data, name = save_png(page, "#cmp-figure", tmp_path)
    assert name == "deepdive-three-vocabularies-compared.png"
    check_png(page, "#cmp-figure", data, ["#ffd8d6", "#ffe3bf"])  # the first two chip colours
    looks_as_shown(page, "#cmp-figure", data)
    link = "#cmp-csv"
    lines = save_csv(page, link, tmp_path)
    assert lines[0] == "vocabulary,index,id,token"
    assert [line.split(",")[0] for line in lines[1:]].count("gpt2") == len(gpt2_tokenizer().encode('Hello, "world"'))
    assert {line.split(",")[0] for line in lines[1:]} == {"gpt2", "cl100k_base", "o200k_base"}
    page.locator("#tok-text").fill("a, b")
    expect(page.locator(link)).to_have_attribute("href", "/download/compare.csv?text=a%2C+b")
    same_origin(requests, server_url)
