"""The one object routes talk to: it owns the loaded model, the tokenizer and the model thread.

Model work runs on the model thread (app/serving/model_thread.py); tokenizer work needs
no model and runs in the ordinary thread pool, so a tokenize request never
queues behind the model. Streams are app/serving/streaming.py's Generations.

Errors a caller can fix are InputError (413 or 422, with a sentence saying what
was wrong and what is allowed); a full queue is Busy (503).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio
import torch

from app.schemas import answers as an, requests as rq
from app.config import Settings
from app.serving.model_thread import ModelThread
from app.problems import Busy, InputError
from app.serving.streaming import Generation
from model.probes import analysis, incontext, interventions
from model.tokenizers.chat import chat_parts, transcript_messages
from model.tokenizers.hf_tokenizer import HFTokenizer
from model.loading import LoadedModel, load_model
from model.model_card import ModelCard
from model.decode.sampling import SamplingParams, Step
from model.tokenizers.tokenizer import MAX_HISTORY_BYTES, Tokenizer

T = TypeVar("T")


class Engine:
    """Model and tokenizer behind every route; see the module doc for how work is scheduled."""

    def __init__(self, loaded: LoadedModel, settings: Settings):
        self.loaded = loaded
        self.settings = settings
        self.config = loaded.config
        self.tokenizer: Tokenizer | HFTokenizer = loaded.tokenizer  # GPT-2's, or the checkpoint's own
        self.eos_id = self.tokenizer.eos_id  # ends a generation (GPT-2's <|endoftext|>); None: nothing does
        self.start_id = self.tokenizer.start_id
        # every token's display text, looked up for each candidate of every response; the special tokens;
        # the model's rows no token uses (a vocabulary padded to a round size), shown as "<unused N>"
        self.texts: list[str] = []
        specials, self.unused = set(), set()
        for i in range(max(self.config.vocab_size, self.tokenizer.vocab_size)):
            try:
                e = self.tokenizer.lookup(i)
            except ValueError:
                self.texts.append(f"<unused {i}>")
                self.unused.add(i)
                continue
            self.texts.append(e.text)
            if e.special:
                specials.add(i)
        self.special_ids = frozenset(specials | self.unused)  # shown as markers, not as text
        self.model_thread = ModelThread(loaded, settings)
        self.started = int(time.time())  # reported as the model's "created" time by /v1/models
        self._info = self._model_info()
        self._probe_heads: list[dict] | None = None
        self._finder_probe: str | None = None

    @classmethod
    def load(cls, settings: Settings) -> Engine:
        if settings.threads:
            torch.set_num_threads(settings.threads)
        return cls(load_model(settings.model), settings)

    def start(self) -> None:
        self.model_thread.start()

    def stop(self) -> None:
        self.model_thread.stop()

    # ---- the model ----

    def info(self) -> an.ModelInfo:
        return self._info

    def _model_info(self) -> an.ModelInfo:
        cfg = self.config
        return an.ModelInfo(
            name=self.loaded.name, source=str(self.loaded.source), parameters=self.loaded.model.num_parameters(),
            n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, n_ctx=cfg.n_ctx,
            vocab_size=cfg.vocab_size, dtype=str(self.loaded.dtype).removeprefix("torch."),
            card=card_summary(self.loaded.card), tokenizer_vocab_size=self.tokenizer.vocab_size,
            weights_note=self.loaded.weights_note,
            **self.loaded.model.architecture())

    # ---- tokens: no model, ordinary thread pool ----

    async def tokenize(self, text: str) -> an.TokenizeResponse:
        self.check_text(text)
        return await anyio.to_thread.run_sync(self._tokenize, text)

    def _tokenize(self, text: str) -> an.TokenizeResponse:
        tokens = self.tokenizer.tokens(text)
        n_bytes = len(text.encode("utf-8", errors="surrogatepass"))
        return an.TokenizeResponse(
            tokens=[an.SpanToken(id=t.id, text=t.text, bytes=list(t.bytes), partial=t.partial,
                                start=t.start, end=t.end) for t in tokens],
            counts=an.Counts(characters=len(text), bytes=n_bytes, tokens=len(tokens),
                            characters_per_token=round(len(text) / len(tokens), 3) if tokens else 0.0))

    async def detokenize(self, ids: list[int]) -> an.DetokenizeResponse:
        self.check_ids(ids)
        unused = next((i for i in ids if i in self.unused), None)
        if unused is not None:
            raise InputError(f"The id {unused} is a row of this model's embedding that no token of its tokenizer "
                             "uses, so it has no text: leave it out")
        return await anyio.to_thread.run_sync(self._detokenize, ids)

    def _detokenize(self, ids: list[int]) -> an.DetokenizeResponse:
        return an.DetokenizeResponse(text=self.tokenizer.decode(ids), tokens=[self.token_out(i) for i in ids])

    async def bpe(self, text: str) -> an.BpeResponse:
        size = len(text.encode("utf-8", errors="surrogatepass"))
        if size > MAX_HISTORY_BYTES:
            raise InputError(f"The text is {size:,} UTF-8 bytes; the merge history is shown for at most "
                             f"{MAX_HISTORY_BYTES:,}: shorten it", 413)
        return await anyio.to_thread.run_sync(self._bpe, text)

    def _bpe(self, text: str) -> an.BpeResponse:
        h = self.tokenizer.bpe_history(text)
        steps, before, seen = [], h.initial, set()
        for n, m in enumerate(h.steps):
            changes = [an.Change(pretoken=i, symbols=list(new)) for i, (old, new) in enumerate(zip(before, m.symbols))
                       if old != new]
            before = m.symbols
            steps.append(an.MergeStep(step=n + 1, token_id=m.token_id, left=self.piece_text(m.left),
                                     right=self.piece_text(m.right), merged=self.texts[m.token_id],
                                     count=m.count, changes=changes))
        for word in h.initial:
            seen.update(word)
        seen.update(m.token_id for m in h.steps)
        return an.BpeResponse(pretokens=list(h.pretokens), initial=[list(w) for w in h.initial], steps=steps,
                             tokens=h.final, pieces=[an.Piece(id=i, text=self.texts[i]) for i in sorted(seen)])

    async def vocab(self, query: str = "", offset: int = 0, limit: int = 50) -> an.VocabPage:
        total, entries = await anyio.to_thread.run_sync(self.tokenizer.search, query, offset, limit)
        return an.VocabPage(query=query, total=total, offset=offset, limit=limit,
                           items=[an.VocabEntryOut(id=e.id, text=e.text, bytes=list(e.bytes), partial=e.partial)
                                  for e in entries])

    # ---- model work: queued on the model thread ----

    async def next_token(self, req: rq.NextTokenRequest,
                         patch: interventions.Patch | None = None) -> an.NextTokenResponse:
        """The distribution after the input, with req's parts switched off and `patch` written in (stream_patch)."""
        ids = await self.input_ids(req)
        targets = [self.target_id(t) for t in req.targets]
        params = SamplingParams(temperature=req.temperature, top_k=req.top_k, top_p=req.top_p)
        ivs = self.changes(req.interventions, patch)
        r = await self.run(analysis.next_token, self.loaded.model, ids, params, req.n, targets, ivs)
        return await off_loop(lambda: an.NextTokenResponse(
            prompt_tokens=len(ids), before=self.candidates(r["before"]), after=self.candidates(r["after"]),
            mass=r["mass"], entropy=r["entropy"], entropy_after=r["entropy_after"], support=r["support"],
            targets=[an.Target(text=self.texts[t["id"]], **t) for t in r["targets"]]))

    async def chosen(self, ids: list[int], start: int, params: SamplingParams,
                     off: Sequence[rq.InterventionIn] = (), patch: interventions.Patch | None = None) -> list[dict]:
        """The model's own and the warped probability of each token appended after position `start`
        (with the parts `off` switched off and `patch` written in)."""
        self.check_ids(ids)
        self.check_context(len(ids))
        return await self.run(analysis.chosen, self.loaded.model, ids, start, params, self.changes(off, patch))

    async def draw(self, ids: list[int], params: SamplingParams, seed: int,
                   off: Sequence[rq.InterventionIn] = (), patch: interventions.Patch | None = None) -> int:
        """One token drawn after ids by a generator seeded with `seed`, with the parts `off` switched off and
        `patch` written in."""
        self.check_ids(ids)
        self.check_context(len(ids))
        return await self.run(analysis.draw, self.loaded.model, ids, params, seed, self.changes(off, patch))

    async def score_prefix(self, text: str) -> tuple[an.ScoreResponse, int, int]:
        """Each token's loss from the start token on (so the first counts), scoring at most what the context holds;
        and the text's length and that room, in tokens."""
        ids = await self.encode(text)
        room = self.info().n_ctx - 1
        return await self.score(rq.ScoreRequest(ids=ids[:room], prepend_eos=True)), len(ids), room

    async def score(self, req: rq.ScoreRequest) -> an.ScoreResponse:
        ids = await self.input_ids(req, reserve=int(req.prepend_eos))
        if req.prepend_eos:
            if self.start_id is None:
                raise InputError("This model's tokenizer names no start-of-text token to put first, so the first "
                                 "token cannot be scored: set prepend_eos to false")
            ids = [self.start_id, *ids]
        if len(ids) < 2:
            raise InputError("Scoring needs at least two tokens (the first has nothing before it to predict it); "
                             "give a longer text or set prepend_eos")
        r = await self.run(analysis.score, self.loaded.model, ids, self.interventions(req.interventions))
        return await off_loop(lambda: an.ScoreResponse(
            tokens=self.pieces(ids), mean_loss=r["mean_loss"], perplexity=r["perplexity"],
            predictions=[{**p, "text": self.texts[p["id"]], "top_text": self.texts[p["top_id"]]}
                         for p in r["predictions"]]))

    async def activations(self, req: rq.ActivationsRequest) -> an.ActivationsResponse:
        ids = await self.input_ids(req)
        n, L, H = len(ids), self.config.n_layer, self.config.n_head
        bad = [p for p in req.positions or [] if p >= n]
        if bad:
            raise InputError(f"Position {bad[0]} is past the prompt's end: it has {n} tokens, so choose "
                             f"positions 0 to {n - 1}")
        positions = sorted(set(req.positions)) if req.positions is not None else list(range(n))
        attention: dict[int, list[int]] = {}
        for a in req.attention:
            if a.layer >= L:
                raise InputError(f"Layer {a.layer} does not exist: this model has {L} layers, so choose 0 to {L - 1}")
            heads = list(range(H)) if a.heads is None else a.heads
            if any(h >= H for h in heads):
                raise InputError(f"Head {max(heads)} does not exist: this model has {H} heads per layer, so choose "
                                 f"0 to {H - 1}")
            attention.setdefault(a.layer, [])
            attention[a.layer] += [h for h in heads if h not in attention[a.layer]]
        size = (len(positions) * (L + 1) * (int(req.residual_norms) + req.logit_lens)
                + len(positions) * L * req.neurons
                + sum(len(h) for h in attention.values()) * sum(p + 1 for p in positions))
        if size > self.settings.max_activation_values:
            raise InputError(f"This selection is {size:,} numbers; the limit is "
                             f"{self.settings.max_activation_values:,} — choose fewer layers, heads or positions",
                             413)
        r = await self.run(analysis.activations, self.loaded.model, ids, positions=positions,
                           residual_norms=req.residual_norms, attention=attention, neurons=req.neurons,
                           logit_lens=req.logit_lens, interventions=self.interventions(req.interventions))
        lens = [{"label": state["label"], "top": [self.candidates(row) for row in state["top"]]}
                for state in r.get("logit_lens", [])]
        return await off_loop(lambda: an.ActivationsResponse(
            tokens=self.pieces(ids), positions=r["positions"], residual_norms=r.get("residual_norms"),
            attention=r.get("attention"), neurons=r.get("neurons"), logit_lens=lens if "logit_lens" in r else None))

    def interventions(self, given: Sequence[rq.InterventionIn]) -> list[interventions.Intervention]:
        """A request's interventions, checked against this model's blocks, heads and neurons."""
        ivs = [interventions.Intervention(i.kind, i.block, i.index, i.mode) for i in given]
        why = interventions.problem(self.loaded.model, ivs)
        if why:
            raise InputError(why)
        return ivs

    async def lens_probs(self, ids: list[int], tokens: list[int], off: Sequence[rq.InterventionIn] = ()) -> list[float]:
        """The logit lens at the last token with the parts `off` switched off: each state's probability of
        tokens[state] (len(tokens) = blocks + 1)."""
        self.check_ids(ids)
        self.check_context(len(ids))
        if len(tokens) != self.config.n_layer + 1:
            raise InputError(f"The logit lens has {self.config.n_layer + 1} states; {len(tokens)} tokens were given")
        return await self.run(analysis.lens_probs, self.loaded.model, ids, tokens, self.interventions(off))

    def changes(self, off: Sequence[rq.InterventionIn],
                patch: interventions.Patch | None) -> list[interventions.Intervention | interventions.Patch]:
        return [*self.interventions(off), *([patch] if patch else [])]

    async def stream_patch(self, clean: str, block: int, position: int, tokens: int) -> interventions.Patch:
        """One cell of the patching grid kept for a prompt of `tokens` tokens: the clean prompt's residual stream
        entering `block` at `position`, to write into every forward of that prompt (next_token, chosen, draw)."""
        L = self.config.n_layer
        if not 0 <= block < L:
            raise InputError(f"The patch names block {block}; this model has {L} blocks, so choose 0 to {L - 1}")
        ids = await self.encode(clean)
        if not ids:
            raise InputError("The patch copies from a clean prompt, and this link gives none: open the patching grid "
                             "on the Internals page and click a cell again")
        self.check_context(len(ids))
        if position >= min(len(ids), tokens):
            raise InputError(f"The patch copies token {position}, but the clean prompt has {len(ids)} tokens and this "
                             f"prompt {tokens}: choose a token both have, 0 to {min(len(ids), tokens) - 1}")
        return await self.run(interventions.stream_patch, self.loaded.model, ids, block, position)

    async def patch(self, req: rq.PatchRequest) -> an.PatchResponse:
        """Activation patching: the corrupted prompt run with the clean one's residual stream written in at
        each (block, position), scored by the logit difference of the two answers."""
        clean, corrupted = await self.encode(req.clean), await self.encode(req.corrupted)
        if not clean or not corrupted:
            raise InputError("Give both prompts, the clean and the corrupted one: one of them is empty")
        if len(clean) != len(corrupted):
            shown = lambda ids: "|".join(self.texts[i] for i in ids[:24]) + ("|…" if len(ids) > 24 else "")  # noqa: E731
            raise InputError(f"The clean prompt is {len(clean)} tokens and the corrupted one {len(corrupted)}; the grid "
                             "pairs them position by position, so change a word until both split into as many "
                             f"tokens (clean: {shown(clean)!r}; corrupted: {shown(corrupted)!r})")
        cap = interventions.MAX_PATCH_TOKENS
        if len(clean) > cap:
            raise InputError(f"The prompts are {len(clean)} tokens; the patching grid takes at most {cap}: shorten "
                             "both")
        right, wrong = (self.target_id(a, "answer") for a in req.answers)
        if right == wrong:
            raise InputError(f"Both answers are the token {self.texts[right]!r}: name two different tokens, the "
                             "right answer first")
        r = await self.run(interventions.patch_grid, self.loaded.model, clean, corrupted, right, wrong)
        rnd = lambda rows: [[analysis.rounded(v) for v in row] for row in rows]  # noqa: E731
        return an.PatchResponse(clean_tokens=self.pieces(clean), corrupted_tokens=self.pieces(corrupted),
                               answers=self.pieces([right, wrong]), clean=analysis.rounded(r["clean"]),
                               corrupted=analysis.rounded(r["corrupted"]), grid=rnd(r["grid"]),
                               normalised=rnd(r["normalised"]))

    async def heads(self, text: str) -> list[dict]:
        """Every head's previous-token, induction and first-token scores on the text, most induction-like first."""
        ids = await self.encode(text)
        if len(ids) < 2:
            raise InputError("The text needs at least two tokens for a head to look back at anything: type a longer one")
        self.check_context(len(ids))
        scores = await self.run(incontext.head_scores, self.loaded.model, [ids])
        return incontext.ranked_heads(scores)

    async def finder_probe(self) -> str:
        """The head finder's probe: random words said twice, as many as the context holds in this model's tokens
        (40 for any GPT-2; fewer where a small vocabulary splits the words)."""
        if self._finder_probe is None:
            n_ctx = self.info().n_ctx
            n = min(40, n_ctx // 2 - 1)
            while n > 1 and len(await self.encode(incontext.probe_words(n))) > n_ctx:
                n -= 1
            self._finder_probe = incontext.probe_words(n)
        return self._finder_probe

    async def probe_heads(self) -> list[dict]:
        """The ranking on the finder's probe, measured once: what the pages quote is what the finder shows."""
        if self._probe_heads is None:
            self._probe_heads = await self.heads(await self.finder_probe())
        return self._probe_heads

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run fn on the model thread and wait for it without blocking the event loop."""
        limit = self.settings.request_timeout_s
        try:  # a timeout cancels the job if it has not started; one already running finishes unheard
            return await asyncio.wait_for(asyncio.wrap_future(self.model_thread.submit(lambda: fn(*args, **kwargs))),
                                          limit)
        except TimeoutError:
            raise Busy(f"The model did not answer within {limit:g} s, this server's limit per request; "
                       "it is busy, try again in a moment") from None

    # ---- generation ----

    async def generate(self, prompt: str | list[int], max_new_tokens: int | None, params: SamplingParams,
                       seed: int | None = None, stop: Sequence[str] = (), n_top: int = 5,
                       limit_name: str = "max_new_tokens") -> Generation:
        """Start a stream; iterate the returned Generation for its events.

        An empty prompt starts from the start-of-text token (GPT-2's <|endoftext|>,
        as it saw the start of every document). max_new_tokens None means "to the server's cap"; over
        the cap is refused (the message names it limit_name). The stream ends
        with reason "length" at the context's end, however many tokens were
        asked for.
        """
        ids = list(prompt) if isinstance(prompt, list) else await self.encode(prompt)
        self.check_ids(ids)
        if not ids:
            if self.start_id is None:
                raise InputError("Type a prompt: this model's tokenizer names no start-of-text token to begin from")
            ids = [self.start_id]
        self.check_context(len(ids))
        cap = self.settings.max_new_tokens
        if max_new_tokens is not None and max_new_tokens > cap:
            raise InputError(f"The field {limit_name} is {max_new_tokens:,}; this server generates at most {cap:,} "
                             "tokens per request: ask for fewer")
        room = self.config.n_ctx - len(ids)
        gen = Generation(ids, params, min(max_new_tokens or cap, room), seed, n_top, stop,
                         on_cancel=self.model_thread.cancel_stream, event=self.token_event,
                         token_bytes=self.token_bytes, timeout_s=self.settings.generation_timeout_s,
                         eos_id=self.eos_id)
        self.model_thread.add_stream(gen)
        return gen

    # ---- helpers, also for the pages ----

    def check_text(self, text: str, what: str = "text") -> None:
        cap = self.settings.max_text_chars
        if len(text) > cap:
            raise InputError(f"The {what} is {len(text):,} characters; the limit is {cap:,}: shorten it", 413)

    def check_ids(self, ids: Sequence[int]) -> None:
        cap = self.settings.max_text_chars
        if len(ids) > cap:
            raise InputError(f"Too many ids: {len(ids):,} were given and the limit is {cap:,}; send fewer", 413)
        bad = next((i for i in ids if not 0 <= i < self.config.vocab_size), None)
        if bad is not None:
            raise InputError(f"The id {bad} is not a token of this model: use ids from 0 to "
                             f"{self.config.vocab_size - 1:,}")

    def check_context(self, n: int) -> None:
        if n > self.config.n_ctx:
            raise InputError(f"The prompt is {n:,} tokens; this model reads at most {self.config.n_ctx:,}: shorten it")

    async def encode(self, text: str) -> list[int]:
        self.check_text(text)
        return await anyio.to_thread.run_sync(self.tokenizer.encode, text)

    async def chat_prompt(self, transcript: str) -> tuple[list[int], list[dict]] | None:
        """A Human/Assistant transcript written out in this model's own chat template, ending where the
        Assistant's turn begins: its ids, and its parts as the page shows them (text, and each special token
        of the template on its own). None for a model whose file has no template: it continues the text."""
        template = self.tokenizer.chat_template
        if template is None:
            return None
        self.check_text(transcript)
        try:
            written = chat_parts(template, transcript_messages(transcript))
        except ValueError as e:
            message = str(e)
            raise InputError(message[:1].upper() + message[1:]) from None
        return await anyio.to_thread.run_sync(self.chat_tokens, written)

    def chat_tokens(self, written: list[tuple[str, bool]]) -> tuple[list[int], list[dict]]:
        """The template's parts encoded with its special tokens, the messages' words as text; each run of text
        one part, each special token one."""
        ids: list[int] = []
        parts: list[dict] = []
        for text, by_template in written:
            for t in self.tokenizer.tokens(text, allow_special=by_template):
                ids.append(t.id)
                piece = text[t.start:t.end]
                if not t.special and parts and not parts[-1]["special"]:
                    parts[-1]["text"] += piece
                else:
                    parts.append({"text": piece, "special": t.special, "id": t.id if t.special else None})
        return ids, parts

    async def input_ids(self, req: rq.TextOrIds, reserve: int = 0) -> list[int]:
        """A request's input as ids, checked: at least one token, no more than the context holds."""
        ids = req.ids if req.ids is not None else await self.encode(req.text)
        self.check_ids(ids)
        if not ids and not reserve:
            raise InputError("The input is empty: give at least one token")
        self.check_context(len(ids) + reserve)
        return ids

    def target_id(self, target: int | str, what: str = "target") -> int:
        if isinstance(target, int):
            self.check_ids([target])
            return target
        ids = self.tokenizer.encode(target)
        if len(ids) != 1:
            raise InputError(f"The {what} {target!r} is {len(ids)} tokens ({', '.join(map(repr, map(self.texts.__getitem__, ids)))}); "
                             "name a text that is exactly one token, or give its id")
        return ids[0]

    def token_out(self, id: int) -> an.TokenOut:
        e = self.tokenizer.lookup(id)
        return an.TokenOut(id=e.id, text=e.text, bytes=list(e.bytes), partial=e.partial)

    @property
    def own_tokenizer(self) -> HFTokenizer | None:
        """The checkpoint's own tokenizer, where the model does not use GPT-2's."""
        return self.tokenizer if isinstance(self.tokenizer, HFTokenizer) else None

    def token_bytes(self, id: int) -> bytes:
        """A token's bytes; none for a row no token uses."""
        return b"" if id in self.unused else self.tokenizer.token_bytes(id)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ids (checked as inputs are), which may include rows no token uses: they add nothing."""
        self.check_ids(ids)
        return self.tokenizer.decode([i for i in ids if i not in self.unused])

    def piece_text(self, data: bytes) -> str:
        return data.decode("utf-8", errors="backslashreplace")

    def pieces(self, ids: Sequence[int]) -> list[an.Piece]:
        return [an.Piece(id=i, text=self.texts[i]) for i in ids]

    def candidates(self, cands: list[dict]) -> list[dict]:
        """Token dicts with their text added (dicts: the response model validates them in one pass)."""
        return [{**c, "text": self.texts[c["id"]]} for c in cands]

    def step_candidates(self, cands: Sequence[Any]) -> list[an.Candidate]:
        return [an.Candidate(id=c.id, text=self.texts[c.id], prob=analysis.rounded(c.prob),
                            logit=analysis.rounded(c.logit)) for c in cands]

    def token_event(self, n: int, step: Step, text: str) -> an.TokenEvent:
        return an.TokenEvent(step=n, id=step.id, text=text, piece=self.texts[step.id],
                            prob=analysis.rounded(step.prob), raw_prob=analysis.rounded(step.raw_prob),
                            entropy=analysis.rounded(step.entropy),
                            before=self.step_candidates(step.before), after=self.step_candidates(step.after))


async def off_loop(build: Callable[[], T]) -> T:
    """Build a response in a worker thread: one can hold 50,257 candidates, too many for the event loop."""
    return await anyio.to_thread.run_sync(build)


def card_summary(card: ModelCard | None) -> an.CardSummary | None:
    """The few figures of a model card the API and the pages show."""
    if card is None:
        return None
    return an.CardSummary(description=card.description, training_tokens=card.training_tokens,
                         training_steps=card.training_steps, validation_loss=card.validation_loss,
                         baselines=card.baselines, corpus=[c.name for c in card.corpus], licences=card.licences)
