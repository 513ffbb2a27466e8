"""Pages agree with their own numbers (issue 22, points 4, 5 and 7), at the projector's size (1366×768): every
sentence about copying comes from app/views/copying.py's one source, a share is rounded alike on the Data page and in
the card's README, and a Playground preset's note quotes what the default model writes.

The first server's card has a corpus whose shares sum to a hair under 1 (as model/training/card.py writes them) and
copying figures; the tiny random model's heads are measured live. The second serves the default model.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Page, expect

from app.views import copying
from app.config import DEFAULT_MODEL, Settings
from app.views.copying import CopyingFacts
from app.demo import MEASURED
from app.serving.engine import Engine
from app.main import create_app
from app.views import loss
from live_server import serve
from model.training.card import card_markdown
from model.model_card import Copying

pytestmark = pytest.mark.browser
PROJECTOR = pytest.mark.parametrize("sized", ["projector"], indirect=True)
SHIPPED = json.loads((Path(__file__).parents[2] / "model/checkpoints/deepdive-tiny/model_card.json").read_text())
CORPUS = SHIPPED["corpus"]  # tales 0.285 of shares that sum to a hair under 1


def browser_conftest():
    """The browser conftest (loaded by path: "conftest" names two modules in this suite)."""
    spec = importlib.util.spec_from_file_location("browser_conftest", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def server_url(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("figures") / "deepdive-figures"
    shutil.copytree(tiny_checkpoint, path)
    (path / "model_card.json").write_text(json.dumps({
        "description": "A tiny random model.", "training": {"tokens_seen": 4_096_000}, "corpus": CORPUS,
        "incontext": {"first_copy": 9.8, "second_copy": 3.7, "name_first_use": 10.2, "name_later_uses": 7.3}}))
    settings = Settings(model=str(path))
    app = create_app(settings, Engine.load(settings))
    app.add_middleware(browser_conftest().StrictCSP)
    with serve(app) as url:
        yield url


@pytest.fixture(scope="module")
def default_url() -> Iterator[str]:
    """The default model, whose Playground notes quote what it writes."""
    settings = Settings(model=str(DEFAULT_MODEL))
    app = create_app(settings, Engine.load(settings))
    app.add_middleware(browser_conftest().StrictCSP)
    with serve(app) as url:
        yield url


@pytest.fixture
def projector_on_default(browser, default_url: str):
    yield from browser_conftest().open_page(browser, default_url, {"width": 1366, "height": 768})


# ---------------------------------------------------------------- 4. one source for every sentence on copying

HEAD = {"layer": 1, "head": 3, "previous_token": 0.2, "induction": 0.83, "first_token": 0.1}
OTHER = {"layer": 0, "head": 2, "previous_token": 0.64, "induction": 0.05, "first_token": 0.2}
READS = Copying(first_copy=9.1, second_copy=1.2, name_first_use=10.6, name_later_uses=1.4)
DOES_NOT = Copying(first_copy=9.1, second_copy=8.8, name_first_use=10.6, name_later_uses=9.9)


def limits(page: Page) -> tuple[str, str]:
    page.goto("/")
    return page.locator(".can-cannot > div").nth(0).inner_text(), page.locator(".can-cannot > div").nth(1).inner_text()


@PROJECTOR
@pytest.mark.parametrize("card", [READS, DOES_NOT], ids=["reads", "does-not"])
def test_every_sentence_on_copying_follows_the_one_source(sized: Page, monkeypatch: pytest.MonkeyPatch,
                                                          card: Copying) -> None:
    page = sized
    heads = [HEAD, OTHER] if card is READS else [{**HEAD, "induction": 0.31}, OTHER]

    async def facts(engine: Engine) -> CopyingFacts:
        return CopyingFacts(card, heads, 17_000_000)

    monkeypatch.setattr(copying, "facts", facts)
    can, cannot = limits(page)
    lines = f"random words said a second time cost it {card.second_copy} nats per token, against {card.first_copy}"
    names = f"it costs {card.name_later_uses} nats per token when it comes back, against {card.name_first_use}"
    assert lines in (can if card is READS else cannot)
    assert names in (can if card is READS else cannot)
    assert "the model card's probe of repeated words" in can + cannot  # each names its measurement
    assert ("block 1, head 3 puts 83% of its attention" in can) == (card is READS)
    # the Internals hint quotes the same heads, on the finder's probe
    page.goto("/internals")
    hint = page.locator("p.hint", has_text="In this model")
    if card is READS:
        expect(hint).to_contain_text("block 1, head 3 looks back at what followed the current token last time "
                                     "(an induction head): 83% of its attention")
    else:
        expect(hint).to_contain_text("no head clearly looks back at what followed the current token last time "
                                     "(the best, block 1, head 3, puts 31% there)")
    expect(hint).to_contain_text("block 0, head 2 looks at the previous token: 64%")
    # the Training page's note on a repeated stretch names the same head where it says the model read it back;
    # a random model reads nothing back, so any drop counts here
    monkeypatch.setattr(loss, "READS_LINES", 10.0)
    page.goto("/loss?" + urlencode({"text": "the cat sat on the mat. " * 3}))
    note = page.locator("[data-repeats]")
    expect(note).to_contain_text("It read them from the text above it")
    assert ("block 1, head 3 puts 83% of its attention there" in note.inner_text()) == (card is READS)


@PROJECTOR
def test_the_internals_hint_quotes_the_head_finders_probe(sized: Page) -> None:
    page = sized
    page.goto("/internals")
    hint = page.locator("p.hint", has_text="In this model").inner_text()
    layer, head, share = re.search(r"\(the best, block (\d+), head (\d+), puts (\d+)% there\)\.", hint).groups()
    page.get_by_role("button", name="Measure on random words said twice").click()
    row = page.locator("#int-heads tbody tr").first  # ranked by induction: the best first
    expect(row).to_contain_text(f"block {layer}, head {head}")
    assert round(float(row.locator("td").nth(2).inner_text()) * 100) == int(share)


# ---------------------------------------------------------------- 5. a share rounds alike everywhere

@PROJECTOR
def test_the_data_page_rounds_a_share_as_the_card_does(sized: Page) -> None:
    page = sized
    page.goto("/data")
    cells = page.locator("#size-h ~ table").first.locator("tbody tr").evaluate_all(
        "rows => rows.map(r => [r.cells[0].textContent.trim(), r.cells[1].textContent.trim()])")
    readme = card_markdown(SHIPPED)
    assert {name for name, _ in cells} == set(SHIPPED["corpus"])  # every source, so the check below cannot pass empty
    for name, share in cells:
        assert f"| {name} | {share} |" in readme, (name, share)


# ---------------------------------------------------------------- 7. a preset's note says what the model writes

@pytest.mark.parametrize("key", [k for k, wrote in MEASURED["deepdive-tiny"].items() if wrote],
                         ids=lambda k: k)
def test_a_presets_note_quotes_what_the_default_model_writes(projector_on_default: Page, key: str) -> None:
    page = projector_on_default
    note = run_preset(page, key)
    expect(note).to_contain_text("At temperature 0 this model writes")
    quoted = re.search(r"writes “(.*?)”", note.inner_text()).group(1)
    expect(page.locator("#pg-one [data-stat=finish]")).to_contain_text("written")
    written = page.locator("#pg-output .chip").evaluate_all("""cs => cs.map(c => {  // without the marks (·, ↵)
        const k = c.cloneNode(true); k.querySelectorAll('.ws-mark').forEach(m => m.remove()); return k.textContent;
      }).join('')""")
    assert " ".join(written.split()) == quoted


def run_preset(page: Page, key: str):
    """Pick the preset, generate at temperature 0 (the chat preset samples; the notes are about temperature 0),
    and return its note."""
    page.goto("/playground")
    page.locator(f"button[data-preset={key}]").click()
    move = "(el) => { el.value = '0'; el.dispatchEvent(new Event('input', {bubbles: true})); }"
    page.eval_on_selector("#pg-temperature", move)
    page.locator("button[data-run=one]").click()
    return page.locator("#pg-note")


def test_the_default_model_ends_the_line_at_once_and_both_say_so(projector_on_default: Page) -> None:
    """Opposites: after "up =>" the default model's first token is the stop text (a new line), so nothing shows on
    a projector; the preset's note and the run's own line both say why."""
    assert MEASURED["deepdive-tiny"]["opposites"] == ""
    page = projector_on_default
    note = run_preset(page, "opposites")
    expect(note).to_contain_text("At temperature 0 this model ends the line at once")
    expect(page.locator("#pg-one [data-stat=finish]")).to_contain_text(
        "The model ended the text at once: its first token was the stop text.")
