"""Each figure's numbers as CSV (app/pages/downloads.py): the right rows, quoted so any token text survives,
built from the same state the page's URL holds; bad input is a 4xx sentence, never a 500; the pages link
each figure's PNG and CSV downloads with their current state."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from app.config import Settings
from app.main import create_app
from model.tokenizers.encodings import NAMES, tokenizer
from model.tokenizers.tokenizer import gpt2_tokenizer

MAX_CHARS = 2000
TRICKY = 'He said, "yes, no"\nand left, again, "now"'  # commas, quotes and a newline in token texts
LOG = [{"step": st, "tokens": st * 4096, "train_loss": 3 + 1 / st, "val_loss": 3.1 + 1 / st,
        "val_losses": {"stories": 3.1 + 1 / st, "books": 4 + 1 / st}} for st in (100, 200, 300)]


@pytest.fixture(scope="module")
def model_dir(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("downloads") / "with-log"
    shutil.copytree(tiny_checkpoint, path)
    lines = [json.dumps(r) for r in LOG] + ["not json", json.dumps({"step": 400, "lr": 1e-3})]
    (path / "training_log.jsonl").write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def client(model_dir: Path) -> Iterator[TestClient]:
    settings = Settings(model=str(model_dir), max_text_chars=MAX_CHARS)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def bare_client(tiny_checkpoint: Path) -> Iterator[TestClient]:
    """The tiny model without a training log."""
    with TestClient(create_app(Settings(model=str(tiny_checkpoint)))) as c:
        yield c


def table(r: Response, figure: str) -> list[list[str]]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == f'attachment; filename="deepdive-{figure}.csv"'
    return list(csv.reader(io.StringIO(r.text, newline="")))


def n_tokens(text: str) -> int:
    return len(gpt2_tokenizer().encode(text))


def texts(text: str) -> list[str]:
    return [t.text for t in gpt2_tokenizer().tokens(text)]


def refused(r: Response, status: int | tuple[int, ...] = 422) -> str:
    assert r.status_code in ((status,) if isinstance(status, int) else status), (r.status_code, r.text)
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert text[:1].isupper() and text.endswith(".") and "\n" not in text and len(text) < 300, text
    return text


# ---------------------------------------------------------------- the tables

def test_attention(client: TestClient) -> None:
    rows = table(client.get("/download/attention.csv", params={"prompt": TRICKY, "layer": 1, "head": 3}), "attention")
    n = n_tokens(TRICKY)
    assert rows[0] == ["position", "token", *(f"key {k}" for k in range(n))]
    assert len(rows) == 1 + n
    assert [r[1] for r in rows[1:]] == texts(TRICKY)  # commas, quotes and the newline came through whole
    for q, row in enumerate(rows[1:]):
        assert row[0] == str(q) and len(row) == 2 + n
        weights = [float(w) for w in row[2:3 + q]]
        assert abs(sum(weights) - 1) < 1e-3  # each row of attention adds up to 1
        assert row[3 + q:] == [""] * (n - 1 - q)  # nothing above the diagonal


def test_attention_defaults_to_the_page_state(client: TestClient) -> None:
    """Left out, the prompt, block and head are the page's defaults: the last block, head 0."""
    default = table(client.get("/download/attention.csv"), "attention")
    from app.demo import DEFAULT_INTERNALS_PROMPT
    same = table(client.get("/download/attention.csv",
                            params={"prompt": DEFAULT_INTERNALS_PROMPT, "layer": 1, "head": 0}), "attention")
    assert default == same and len(default) == 1 + n_tokens(DEFAULT_INTERNALS_PROMPT)


def test_lens(client: TestClient) -> None:
    rows = table(client.get("/download/lens.csv", params={"prompt": TRICKY}), "lens")
    n, n_layer = n_tokens(TRICKY), 2
    assert rows[0] == ["state", "position", "token", "top_guess", "probability"]
    assert len(rows) == 1 + (n_layer + 1) * n
    assert [r[0] for r in rows[1::n]] == ["embeddings", "after block 0", "after block 1"]
    assert [r[2] for r in rows[1:1 + n]] == texts(TRICKY)
    assert all(0 < float(r[4]) <= 1 for r in rows[1:])


@pytest.mark.parametrize("n", [5, 20])
def test_next_token(client: TestClient, n: int) -> None:
    rows = table(client.get("/download/next-token.csv",
                            params={"prompt": TRICKY, "n": n, "top_k": 3, "temperature": 0.7, "seed": 7}), "next-token")
    assert rows[0] == ["rank", "id", "token", "model_probability", "chance_now"]
    assert len(rows) == 1 + n
    assert [int(r[0]) for r in rows[1:]] == list(range(1, n + 1))
    model = [float(r[3]) for r in rows[1:]]
    assert model == sorted(model, reverse=True)
    now = [float(r[4]) for r in rows[1:]]
    assert all(p > 0 for p in now[:3]) and all(p == 0 for p in now[3:])  # top-k 3: the rest are cut
    assert abs(sum(now) - 1) < 1e-3


def test_next_token_follows_the_steps(client: TestClient) -> None:
    """With steps taken, the bars are for the text after them: the same as a prompt that includes them."""
    prompt = "Once upon a time"
    ids = gpt2_tokenizer().encode(" there was")
    stepped = table(client.get("/download/next-token.csv",
                               params={"prompt": prompt, "steps": ".".join(f"h{i}" for i in ids)}), "next-token")
    whole = table(client.get("/download/next-token.csv", params={"prompt": prompt + " there was"}), "next-token")
    plain = table(client.get("/download/next-token.csv", params={"prompt": prompt}), "next-token")
    assert [r[1] for r in stepped] == [r[1] for r in whole] != [r[1] for r in plain]


def test_next_token_link_is_the_page_state(client: TestClient) -> None:
    """The Inference page's CSV link carries the state it shows, and answers its bars."""
    html = client.get("/inference", params={"prompt": TRICKY, "n": 15, "top_p": 0.5}).text
    href = unescape(re.search(r'href="(/download/next-token\.csv[^"]*)"', html).group(1))
    q = parse_qs(urlsplit(href).query)
    assert q["prompt"] == [TRICKY] and q["n"] == ["15"] and q["top_p"] == ["0.5"]
    assert len(table(client.get(href), "next-token")) == 1 + 15
    # the partial's answer carries the link too, out of band, for the state after the action
    r = client.post("/partials/inference", data={"prompt": TRICKY, "n": "5", "pick": "318"})
    link = re.search(r'<div id="inf-figure-tools"[^>]*hx-swap-oob="true"[^>]*>.*?href="([^"]+)"', r.text, re.S)
    q = parse_qs(urlsplit(unescape(link.group(1))).query)
    assert q["n"] == ["5"] and q["steps"] == ["h318t100"]


def test_loss(client: TestClient) -> None:
    rows = table(client.get("/download/loss.csv", params={"text": TRICKY}), "loss")
    assert rows[0] == ["position", "id", "token", "probability", "loss_nats", "rank", "top_guess"]
    assert len(rows) == 1 + n_tokens(TRICKY)
    assert [r[2] for r in rows[1:]] == texts(TRICKY)
    assert [int(r[1]) for r in rows[1:]] == gpt2_tokenizer().encode(TRICKY)
    for r in rows[1:]:
        assert abs(float(r[4]) + math.log(float(r[3]))) < 1e-3  # loss = -ln p


def test_loss_scores_what_the_context_holds(client: TestClient) -> None:
    """As the page does: at most n_ctx - 1 tokens (after <|endoftext|>)."""
    rows = table(client.get("/download/loss.csv", params={"text": "one two three " * 40}), "loss")
    assert len(rows) == 1 + 63


def test_training_curve(client: TestClient) -> None:
    rows = table(client.get("/download/training-curve.csv"), "training-curve")
    # "stories" repeats val_loss, as the chart leaves it out; "books" is another source
    assert rows[0] == ["step", "tokens", "train_loss", "val_loss", "val_loss_books"]
    assert [r[0] for r in rows[1:]] == ["100", "200", "300"]  # evaluations only: not the bad line, not step 400
    assert rows[1][1] == str(100 * 4096) and abs(float(rows[1][4]) - 4.01) < 1e-6


def test_training_curve_without_a_log(bare_client: TestClient) -> None:
    assert table(bare_client.get("/download/training-curve.csv"), "training-curve") == [
        ["step", "tokens", "train_loss", "val_loss"]]


def test_compare(client: TestClient) -> None:
    rows = table(client.get("/download/compare.csv", params={"text": TRICKY}), "compare")
    assert rows[0] == ["vocabulary", "index", "id", "token"]
    counts = {name: len(tokenizer(name).encode(TRICKY)) for name in NAMES}
    assert len(rows) == 1 + sum(counts.values())
    for name in NAMES:
        mine = [r for r in rows[1:] if r[0] == name]
        assert [int(r[1]) for r in mine] == list(range(counts[name]))
        assert [r[3] for r in mine] == [t.text for t in tokenizer(name).tokens(TRICKY)]


# ---------------------------------------------------------------- hostile input

TOO_LONG = "a " * MAX_CHARS


@pytest.mark.parametrize(("path", "params", "status", "says"), [
    ("attention.csv", {"prompt": ""}, 422, "empty"),
    ("attention.csv", {"prompt": TOO_LONG}, 413, "2,000"),
    ("attention.csv", {"prompt": "word " * 200}, 422, "at most 64"),  # longer than the context
    ("attention.csv", {"layer": "two"}, 422, "whole number"),
    ("attention.csv", {"layer": "2"}, 422, "from 0 to 1"),
    ("attention.csv", {"head": "-1"}, 422, "from 0 to 3"),
    ("attention.csv", {"head": "1" * 5000}, 422, "whole number"),
    ("lens.csv", {"prompt": ""}, 422, "empty"),
    ("lens.csv", {"prompt": "word " * 200}, 422, "at most 64"),
    ("next-token.csv", {"prompt": ""}, 422, "empty"),
    ("next-token.csv", {"prompt": "word " * 200}, 422, "at most 64"),
    ("next-token.csv", {"temperature": "hot"}, 422, "temperature"),
    ("next-token.csv", {"temperature": "nan"}, 422, "temperature"),
    ("next-token.csv", {"top_p": "1e999"}, 422, "top_p"),
    ("next-token.csv", {"top_k": "2.5"}, 422, "top_k"),
    ("next-token.csv", {"n": "0"}, 422, "from 1 to 30"),
    ("next-token.csv", {"seed": "-3"}, 422, "seed"),
    ("next-token.csv", {"steps": "g318.<script>"}, 422, "steps"),
    ("next-token.csv", {"steps": "h99999999"}, 422, "steps"),
    ("next-token.csv", {"prompt": "word " * 40, "steps": ".".join(["h318"] * 30)}, 422, "context"),
    ("loss.csv", {"text": ""}, 422, "empty"),
    ("loss.csv", {"text": "  \n "}, 422, "empty"),
    ("loss.csv", {"text": TOO_LONG}, 413, "2,000"),
    ("compare.csv", {"text": ""}, 422, "empty"),
    ("compare.csv", {"text": TOO_LONG}, 413, "2,000"),
])
def test_bad_input_is_a_sentence(client: TestClient, path: str, params: dict, status: int, says: str) -> None:
    assert says.lower() in refused(client.get(f"/download/{path}?{urlencode(params)}"), status).lower()


def test_hostile_text_is_data(client: TestClient) -> None:
    """Markup and control characters are cells like any other text."""
    evil = '<script>alert("x")</script>,\x01\r\n=1+1'
    rows = table(client.get("/download/loss.csv", params={"text": evil}), "loss")
    # a token that starts like a formula is written with an apostrophe, as spreadsheets read text
    assert "".join(r[2] for r in rows[1:]) == "".join("'" + t if t[:1] in "=+-@" else t for t in texts(evil))


# ---------------------------------------------------------------- the pages link them

@pytest.mark.parametrize(("page", "png", "csv_path"), [
    ("/internals", "#int-attn .attn-map", "/download/attention.csv"),
    ("/internals", "#int-lens", "/download/lens.csv"),
    ("/inference", "#inf-figure", "/download/next-token.csv"),
    ("/loss", "#loss-figure", "/download/loss.csv"),
    ("/data", "#curve-chart", "/download/training-curve.csv"),
    ("/tokenizer", "#cmp-figure", "/download/compare.csv"),
])
def test_each_figure_has_its_downloads(client: TestClient, page: str, png: str, csv_path: str) -> None:
    html = client.get(page).text
    assert '<script src="/static/js/figures.js" defer></script>' in html
    assert f'data-figure-png="{png}"' in html
    href = unescape(re.search(rf'href="({re.escape(csv_path)}[^"]*)"', html).group(1))
    assert client.get(href).status_code == 200
    assert " style=" not in html  # the CSP allows no style attributes


def test_page_links_carry_the_page_state(client: TestClient) -> None:
    html = client.get("/internals", params={"prompt": TRICKY, "layer": 0, "head": 2}).text
    hrefs = [unescape(h) for h in re.findall(r'href="(/download/attention\.csv[^"]*)"', html)]  # a link per head
    assert [parse_qs(urlsplit(h).query) for h in hrefs][2] == {"prompt": [TRICKY], "layer": ["0"], "head": ["2"]}
    for page, path in (("/loss", "loss"), ("/tokenizer", "compare")):
        html = client.get(page, params={"text": TRICKY}).text
        href = unescape(re.search(rf'href="(/download/{path}\.csv[^"]*)"', html).group(1))
        assert parse_qs(urlsplit(href).query) == {"text": [TRICKY]}
    # the partial that redraws a figure sends its links again, out of band
    for url, data, link, path in (("/partials/loss", {"text": TRICKY}, "loss-csv", "loss"),
                                  ("/partials/compare", {"text": TRICKY}, "cmp-csv", "compare"),
                                  ("/partials/forward", {"prompt": TRICKY}, "int-lens-csv", "lens")):
        body = client.post(url, data=data).text
        href = unescape(re.search(rf'<a id="{link}" class="button" href="(/download/{path}\.csv[^"]*)" hx-swap-oob="true"',
                                  body).group(1))
        assert parse_qs(urlsplit(href).query) == {"prompt" if path == "lens" else "text": [TRICKY]}


def test_static_script_has_no_eval_or_remote(client: TestClient) -> None:
    js = client.get("/static/js/figures.js").text
    assert not re.search(r"\beval\(|new Function|https?://(?!www\.w3\.org/)", js)


def test_a_token_a_spreadsheet_would_run_is_written_as_text(client: TestClient) -> None:
    r = client.get("/download/loss.csv", params={"text": "=HYPERLINK(1) +cmd @x"})
    rows = list(csv.reader(io.StringIO(r.text)))
    texts = [row for row in rows[1:]]
    assert any(cell.startswith("'=") for row in texts for cell in row)
    assert not any(cell[:1] in "=+@" for row in texts for cell in row)
