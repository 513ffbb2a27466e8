"""In-context copying: the data that teaches it (model/training/augment.py) and the probes that measure it
(model/probes/incontext.py)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from model.probes import incontext
from model.training import augment
from model.nets.gpt2 import GPT
from model.nets.record import Recorder
from model.tokenizers.tokenizer import EOT_ID, gpt2_encoding
from model.training.data import Batches, SourceSpec, prepare

STORY = ("Once upon a time, there was a girl named Lily. Lily had a dog named Max. "
         "Lily and Max played in the spot by the tree. Max was happy.")


def test_invented_names_replace_each_name_the_same_way_throughout():
    rng = random.Random(0)
    out = augment.invent_names(STORY, {"Lily", "Max"}, rng)
    assert "Lily" not in out and "Max" not in out
    words = out.split()
    first, dog = words[words.index("named") + 1].rstrip("."), words[words.index("dog") + 2].rstrip(".")
    assert first != dog
    assert out.count(first) == 3 and out.count(dog) == 3
    assert "in the spot by the tree" in out  # other words untouched


def test_character_names_are_the_introduced_ones_not_nouns():
    docs = [STORY] * 3 + ["The dog named Spot sat on a spot. A spot, a spot, a spot, a spot."] * 3
    names = augment.character_names(docs)
    assert {"Lily", "Max"} <= names
    assert "Spot" not in names  # written lower-case far more often: a noun, not a name


def test_the_probe_names_are_never_invented():
    rng = random.Random(1)
    made = {augment.invented_name(rng) for _ in range(20_000)}
    assert not made & augment.RESERVED_NAMES
    assert set(incontext.PROBE_NAMES) <= augment.RESERVED_NAMES


def test_text_rows_repeat_a_piece_and_score_every_target():
    g = torch.Generator().manual_seed(0)
    text = np.arange(1000, dtype=np.uint16)
    x, y = augment.repeated_row(64, g, text, min_span=8, max_span=8)
    assert (y != augment.IGNORE).all() and torch.equal(x[8:16], x[:8])


@pytest.mark.parametrize("seed", range(6))
def test_random_spans_repeat_in_text_with_the_first_copy_unscored(seed):
    g = torch.Generator().manual_seed(seed)
    pools = augment.SpanPools(np.arange(100, 3100), gpt2_encoding())
    text = np.zeros(10_000, dtype=np.uint16)  # "natural" text of "!", which no pool holds
    x, y = augment.spans_in_text(128, g, pools, text, min_span=4, max_span=16)
    assert x.shape == y.shape == (128,)
    row = torch.cat([x[:1], y.where(y != augment.IGNORE, x.roll(-1))])
    synthetic = (row != 0).nonzero().flatten().tolist()
    assert len(synthetic) >= 8  # at least two copies of a span of 4 or more
    unscored = (y == augment.IGNORE).nonzero().flatten() + 1
    copy = row[unscored]
    assert 4 <= len(copy) <= 16 and set(unscored.tolist()) <= set(synthetic)
    # every synthetic token after the first copy repeats it, in order
    later = [t for t in synthetic if t > int(unscored.max())]
    assert len(later) % len(copy) == 0 and len(later) >= len(copy)
    assert torch.equal(row[later], copy.repeat(len(later) // len(copy)))


def test_span_pools_draw_from_the_whole_vocabulary_and_from_names():
    enc = gpt2_encoding()
    words = augment.word_like_tokens(enc)
    assert len(words) > 30_000
    assert enc.encode_ordinary(" dog")[0] in words and enc.encode_ordinary("dog")[0] in words
    assert enc.encode_ordinary(" 12")[0] not in words and enc.encode_ordinary(",")[0] not in words
    pools = augment.SpanPools(np.arange(100, 3100), enc, shares=(0.0, 0.0, 1.0))
    names = enc.decode(pools.span(24, torch.Generator().manual_seed(0)).tolist())
    assert names.startswith(" ") and names.split()[0][0].isupper()


def test_a_name_is_never_reused_across_stories():
    rng, used = random.Random(0), set()
    outs = [augment.invent_names(STORY, {"Lily", "Max"}, rng, used, min_uses=3) for _ in range(50)]
    firsts = {o.split()[o.split().index("named") + 1].rstrip(".") for o in outs}
    assert len(firsts) == 50 and len(used) == 100
    assert augment.invent_names("A girl named Lily smiled.", {"Lily"}, rng, used, min_uses=3) == \
        "A girl named Lily smiled."  # one use: nothing to read back, left as it is


def test_batches_with_repeats_are_deterministic(tmp_path):
    samples = str(Path(incontext.__file__).parent.parent / "samples" / "tinystories_train.txt")
    prepare([SourceSpec("stories", 1.0, [samples])], held_out={}, out=tmp_path, val_fraction=0.2)
    a = Batches(tmp_path, "train", 32, seed=3)
    b = Batches(tmp_path, "train", 32, seed=3)
    xa, ya = a.get(7, 0, 16, repeat_share=0.5)
    xb, yb = b.get(7, 0, 16, repeat_share=0.5)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert (ya == augment.IGNORE).any()  # some random-span rows in 16
    assert not (a.get(7, 0, 16)[1] == augment.IGNORE).any()  # none without a share


def test_expected_positions():
    pairs = incontext.expected_positions([5, 6, 7, 5, 6, 7])
    assert pairs["previous_token"] == [(1, 0), (2, 1), (3, 2), (4, 3), (5, 4)]
    assert pairs["induction"] == [(3, 1), (4, 2), (5, 3)]
    assert pairs["first_token"] == [(t, 0) for t in range(1, 6)]
    # a token repeated right away has no "next" position to look at but itself
    assert incontext.expected_positions([9, 9])["induction"] == []


def test_head_scores_equal_a_plain_loop(tiny_model: GPT):
    seqs = [[EOT_ID, 11, 12, 13, 14, 11, 12, 13, 14], [EOT_ID, 20, 21, 22, 20, 21, 22, 23, 24]]
    scores = incontext.head_scores(tiny_model, seqs)
    rec = Recorder(["blocks.*.attn.pattern"])
    tiny_model(torch.tensor(seqs), rec=rec)
    L, H = tiny_model.config.n_layer, tiny_model.config.n_head
    for kind in ("previous_token", "induction", "first_token"):
        for i in range(L):
            p = rec[f"blocks.{i}.attn.pattern"]
            for h in range(H):
                values = [float(p[b, h, q, k]) for b, s in enumerate(seqs)
                          for q, k in incontext.expected_positions(s)[kind]]
                assert float(getattr(scores, kind)[i, h]) == pytest.approx(sum(values) / len(values), abs=1e-6)
    ranked = incontext.ranked_heads(scores)
    assert len(ranked) == L * H and ranked[0]["induction"] == max(r["induction"] for r in ranked)


def test_repeats_compares_second_occurrences_with_first():
    ids = [EOT_ID, 1, 2, 3, 9, 1, 2, 3]
    losses = [5.0, 6.0, 7.0, 1.0, 4.0, 0.5, 0.25]  # losses[t - 1] scores ids[t]
    r = incontext.repeats(ids, losses)
    assert r == {"tokens": 2, "first_time": pytest.approx((6.0 + 7.0) / 2), "again": pytest.approx(0.375)}
    assert incontext.repeats([EOT_ID, 1, 2, 3], [1.0, 1.0, 1.0]) is None


def test_probes_are_fixed_and_one_token_per_word():
    enc = gpt2_encoding()
    assert incontext.probe_words() == incontext.probe_words()
    words = incontext.random_words(12, seed=7).split()
    assert len(words) == 12 == len(set(words))
    assert len(incontext.common_word_ids(enc)) >= 100
    seqs = incontext.repeated_tokens(length=40, trials=2)
    assert all(s[0] == EOT_ID and s[1:41] == s[41:] for s in seqs)


def test_measure_reports_every_figure(tiny_model: GPT):
    m = incontext.measure(tiny_model)
    assert set(m) == {"first_copy", "second_copy", "second_copy_all_words", "name_first_use", "name_later_uses",
                      "name_later_first_piece", "name_later_rest", "previous_token_head", "induction_head", "first_token_head"}
    # a random model copies nothing: the second copy costs about what the first does
    assert abs(m["second_copy"] - m["first_copy"]) < 1.0
    assert 0 <= m["induction_head"]["score"] <= 1
    # a name's returns, split into the piece only the story predicts and the pieces copying predicts
    assert min(m["name_later_first_piece"], m["name_later_rest"]) <= m["name_later_uses"] \
        <= max(m["name_later_first_piece"], m["name_later_rest"])
