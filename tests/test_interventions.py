"""Hook points and interventions in the model layer.

The recorder's hook points must leave a plain forward exactly as it was; an ablation must
equal the weight surgery it stands for (zeroing a head's input columns of the output
projection, or a neuron's column of the MLP's down projection); patching must reproduce
the clean run where it writes all of it, and change nothing when a run is patched with itself.
"""

from __future__ import annotations

import copy

import pytest
import torch

from model.probes import analysis
from model.nets.gpt2 import GPT
from model.probes.interventions import Intervention, hooks, patch_grid, patched_logits, problem, sizes, stream_patch
from model.nets.llama import Llama, LlamaConfig
from model.nets.record import Recorder, all_names
from model.decode.sampling import SamplingParams

SURGERY = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def llama() -> Llama:
    """A grouped-query Llama (4 query heads sharing 2 key/value heads), every parameter random."""
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = Llama(LlamaConfig(n_layer=2, n_head=4, n_kv_head=2, n_embd=64, n_ctx=64, vocab_size=300,
                                  n_inner=96, head_dim=16, tie_word_embeddings=False))
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim == 1:
                    p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.fixture(params=["gpt2", "llama"])
def model(request: pytest.FixtureRequest, tiny_model: GPT, llama: Llama) -> GPT | Llama:
    return tiny_model if request.param == "gpt2" else llama


def ids_for(model: GPT | Llama, n: int = 11, seed: int = 3, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, min(model.config.vocab_size, 300), (batch, n), generator=g)


def blocks(model: GPT | Llama) -> list:
    return list(model.layers if isinstance(model, Llama) else model.h)


def out_proj(block) -> torch.nn.Linear:  # attention's output projection: GPT-2's c_proj, Llama's o_proj
    return block.self_attn.o_proj if hasattr(block, "self_attn") else block.attn.c_proj


def down_proj(block) -> torch.nn.Linear:  # the MLP's output projection: GPT-2's c_proj, Llama's down_proj
    return block.mlp.down_proj if hasattr(block.mlp, "down_proj") else block.mlp.c_proj


# --- hook points ---------------------------------------------------------------------------------

@torch.no_grad()
def test_identity_hooks_at_every_point_leave_the_forward_exact(model: GPT | Llama) -> None:
    """Every hook point hands its activation on; a hook that returns it unchanged changes no bit.
    (The attention pattern is left out: asking for it takes the explicit softmax instead of the
    fused kernel, equal only to rounding.)"""
    ids = ids_for(model, batch=2)
    plain = model(ids)
    names = [n for n in all_names(model.config.n_layer) if not n.endswith("attn.pattern")]
    seen: list[str] = []

    def identity(name: str):
        def hook(x: torch.Tensor) -> torch.Tensor:
            seen.append(name)
            return x
        return hook

    assert torch.equal(model(ids, rec=Recorder([], {n: identity(n) for n in names})), plain)
    want = [n for n in names if n != "pos_embed" or isinstance(model, GPT)]
    assert seen == want  # every point was reached, in forward order


@torch.no_grad()
def test_a_hook_replaces_the_activation(model: GPT | Llama) -> None:
    ids = ids_for(model)
    last = f"blocks.{model.config.n_layer - 1}.resid_post"
    rec = Recorder(["ln_final"], {last: torch.zeros_like})
    logits = model(ids, rec=rec)
    # a zero stream normalises to the norm's bias alone (GPT-2), or to zero (RMSNorm has none)
    bias = getattr(model.ln_f, "bias", None)
    want = torch.zeros_like(rec["ln_final"]) if bias is None else bias.expand_as(rec["ln_final"])
    torch.testing.assert_close(rec["ln_final"], want)
    torch.testing.assert_close(logits, model.unembed(want))


@torch.no_grad()
def test_an_empty_intervention_list_changes_nothing(model: GPT | Llama) -> None:
    ids = ids_for(model)[0].tolist()
    assert torch.equal(analysis.next_logits(model, ids, ()), analysis.next_logits(model, ids))
    assert analysis.score(model, ids, ()) == analysis.score(model, ids)
    assert torch.equal(analysis.next_logits(model, ids, []), model(torch.tensor([ids]), last_only=True)[0, -1].float())


# --- ablation equals weight surgery ----------------------------------------------------------

@torch.no_grad()
@pytest.mark.parametrize("head", [0, 1, 3])
def test_zeroing_a_head_equals_zeroing_its_output_columns(model: GPT | Llama, head: int) -> None:
    """Under grouped-query attention heads 0 and 1 share keys and values: switching 0 off leaves 1 alone."""
    block = model.config.n_layer - 1
    ids = ids_for(model, batch=2)
    cut = copy.deepcopy(model)
    D = model.config.head_dim
    out_proj(blocks(cut)[block]).weight[:, head * D:(head + 1) * D] = 0
    got = model(ids, rec=Recorder([], hooks([Intervention("head", block, head)])))
    torch.testing.assert_close(got, cut(ids), **SURGERY)
    assert not torch.allclose(got, model(ids), **SURGERY)  # the head mattered


@torch.no_grad()
def test_zeroing_a_neuron_equals_zeroing_its_output_column(model: GPT | Llama) -> None:
    ids = ids_for(model, batch=2)
    cut = copy.deepcopy(model)
    for n in (0, 17):
        down_proj(blocks(cut)[0]).weight[:, n] = 0
    ivs = [Intervention("neuron", 0, 0), Intervention("neuron", 0, 17)]
    got = model(ids, rec=Recorder([], hooks(ivs)))
    torch.testing.assert_close(got, cut(ids), **SURGERY)
    assert not torch.allclose(got, model(ids), **SURGERY)


@torch.no_grad()
def test_switching_off_a_whole_attention_or_mlp(model: GPT | Llama) -> None:
    ids = ids_for(model)
    for kind, proj in (("attn", out_proj), ("mlp", down_proj)):
        cut = copy.deepcopy(model)
        layer = proj(blocks(cut)[1])
        layer.weight.zero_()
        if layer.bias is not None:
            layer.bias.zero_()
        torch.testing.assert_close(model(ids, rec=Recorder([], hooks([Intervention(kind, 1)]))), cut(ids), **SURGERY)


@torch.no_grad()
def test_mean_ablation_writes_the_mean_over_positions(model: GPT | Llama) -> None:
    ids = ids_for(model, batch=2)
    for iv in (Intervention("head", 0, 2, "mean"), Intervention("neuron", 0, 5, "mean")):
        plain, ablated = Recorder([iv.point]), Recorder([iv.point], hooks([iv]))
        model(ids, rec=plain)
        model(ids, rec=ablated)
        x, cut = plain[iv.point], ablated[iv.point]  # (B, T, heads, D) or (B, T, neurons)
        i = iv.index
        torch.testing.assert_close(cut[:, :, i], x[:, :, i].mean(dim=1, keepdim=True).expand_as(x[:, :, i]))
        torch.testing.assert_close(cut[:, :, i + 1], x[:, :, i + 1])  # the others untouched
        assert not torch.allclose(cut, x)


def test_problems_are_sentences(model: GPT | Llama) -> None:
    n = sizes(model)
    assert problem(model, [Intervention("head", 0, n["heads"] - 1), Intervention("mlp", 1)]) is None
    assert "choose 0 to 1" in problem(model, [Intervention("attn", 2)])
    assert f"{n['heads']} heads per block" in problem(model, [Intervention("head", 0, n["heads"])])
    assert "needs an index" in problem(model, [Intervention("neuron", 0)])
    assert "takes no index" in problem(model, [Intervention("mlp", 0, 3)])
    assert "at most" in problem(model, [Intervention("mlp", 0)] * 1000)


# --- activation patching ----------------------------------------------------------------------

@torch.no_grad()
def test_patching_every_position_of_a_block_reproduces_the_clean_run(model: GPT | Llama) -> None:
    clean, corrupted = ids_for(model, seed=4)[0].tolist(), ids_for(model, seed=5)[0].tolist()
    want = model(torch.tensor([clean]))[0].float()
    for block in range(model.config.n_layer):
        got = patched_logits(model, clean, corrupted, [(block, p) for p in range(len(clean))])
        torch.testing.assert_close(got, want, **SURGERY)


@torch.no_grad()
def test_patch_grid(model: GPT | Llama) -> None:
    clean, corrupted = ids_for(model, seed=4)[0].tolist(), ids_for(model, seed=5)[0].tolist()
    right, wrong = 7, 9
    g = patch_grid(model, clean, corrupted, right, wrong, rows_per_forward=5)  # several forwards
    L, T = model.config.n_layer, len(clean)
    assert len(g["grid"]) == L and all(len(row) == T for row in g["grid"])
    # each cell is the one-cell patch, run alone
    for b, p in [(0, 0), (1, T - 1), (L - 1, 3)]:
        logits = patched_logits(model, clean, corrupted, [(b, p)])[-1]
        assert g["grid"][b][p] == pytest.approx(float(logits[right] - logits[wrong]), abs=1e-4)
    # the prompts differ in one token only: patching block 0 there restores the clean run; elsewhere the
    # streams entering block 0 agree, so the patch changes nothing
    k = 4
    one_off = list(clean)
    one_off[k] = (clean[k] + 1) % 300
    g = patch_grid(model, clean, one_off, right, wrong)
    assert g["grid"][0][k] == pytest.approx(g["clean"], abs=1e-4)
    assert g["normalised"][0][k] == pytest.approx(1.0, abs=1e-3)
    assert all(g["grid"][0][p] == pytest.approx(g["corrupted"], abs=1e-4) for p in range(T) if p != k)
    # patching a run with itself changes nothing
    same = patch_grid(model, clean, clean, right, wrong)
    assert all(v == pytest.approx(same["clean"], abs=1e-4) for row in same["grid"] for v in row)
    assert same["clean"] == same["corrupted"]


def test_patch_grid_wants_prompts_of_one_length(tiny_model: GPT) -> None:
    with pytest.raises(ValueError, match="same number of tokens"):
        patch_grid(tiny_model, [1, 2, 3], [1, 2], 5, 6)


def test_next_token_with_a_head_off_moves_the_bars(tiny_model: GPT) -> None:
    ids = [464, 3290, 3332, 319, 262]
    params = SamplingParams()
    plain = analysis.next_token(tiny_model, ids, params, n=5)
    off = analysis.next_token(tiny_model, ids, params, n=5,
                              interventions=[Intervention("attn", b) for b in range(2)])
    assert off["before"] != plain["before"]


@torch.no_grad()
def test_a_stream_patch_is_one_cell_of_the_grid_for_every_step(model: GPT | Llama) -> None:
    """The stepper's patch: one cell, applied to the corrupted prompt and to the longer texts that follow it."""
    clean, corrupted = ids_for(model, seed=4)[0].tolist(), ids_for(model, seed=5)[0].tolist()
    b, p = model.config.n_layer - 1, 6
    patch = stream_patch(model, clean, b, p)
    want = patched_logits(model, clean, corrupted, [(b, p)])[-1]
    torch.testing.assert_close(analysis.next_logits(model, corrupted, [patch]), want, **SURGERY)
    # a later step reads more tokens: the patch stays at its position, and an ablation goes with it
    longer = corrupted + [5, 8]
    torch.testing.assert_close(analysis.next_logits(model, longer, [patch]),
                               patched_logits(model, clean, longer, [(b, p)])[-1], **SURGERY)
    both = analysis.next_logits(model, longer, [patch, Intervention("mlp", 0)])
    assert not torch.allclose(both, analysis.next_logits(model, longer, [patch]))


@torch.no_grad()
def test_lens_probs_reads_the_logit_lens_at_the_last_token(model: GPT | Llama) -> None:
    ids = ids_for(model)[0].tolist()
    off = [Intervention("head", 0, 1), Intervention("mlp", 1)]
    lens = analysis.activations(model, ids, positions=[len(ids) - 1], logit_lens=1, interventions=off)["logit_lens"]
    tops = [state["top"][0][0] for state in lens]
    assert analysis.lens_probs(model, ids, [t["id"] for t in tops], off) == [t["prob"] for t in tops]
    # the last state is the model's own prediction, of any token
    probs = analysis.next_logits(model, ids, off).softmax(-1)
    last = analysis.lens_probs(model, ids, [0] * model.config.n_layer + [7], off)[-1]
    assert last == pytest.approx(float(probs[7]), abs=1e-6)
