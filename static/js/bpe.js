/* The byte-pair merge stepper on the tokenizer page (partials/_bpe.html).
 *
 * The JSON block is the engine's BPE history (/api/bpe's shape): pretokens,
 * initial (each pretoken's byte tokens), steps (each merge and the pretokens it
 * changed), tokens, pieces (id -> text). data-bpe-unit says what the story starts
 * from ("bytes", or "characters" for a SentencePiece-style tokenizer, whose missing
 * characters start as byte tokens); data-bpe-rank "id" where a token's id is also
 * its merge's rank (GPT-2), "list" where the merge list orders them. Every state is computed once up front,
 * so Back is as cheap as Step. The step is in the URL (?bpe=K): the server opens a
 * link's story at it (data-bpe-step); a new text starts again from the bytes.
 */
(function () {
  "use strict";
  const PLAY_MS = 700;

  function quoted(text) {
    return DeepDive.el("span", { class: "chip c5" }, DeepDive.visible(text));
  }

  function init(box) {
    const h = JSON.parse(document.getElementById(box.dataset.bpe).textContent);
    const textOf = new Map(h.pieces.map(function (p) { return [p.id, p.text]; }));
    const states = [h.initial];
    h.steps.forEach(function (st) {
      const next = states[states.length - 1].slice();
      st.changes.forEach(function (c) { next[c.pretoken] = c.symbols; });
      states.push(next);
    });
    const last = states.length - 1;
    const words = box.querySelector("[data-bpe-words]");
    const status = box.querySelector("[data-bpe-status]");
    const slider = box.querySelector("[data-bpe-slider]");
    const play = box.querySelector('[data-bpe-action="play"]');
    const nBytes = h.initial.reduce(function (n, w) { return n + w.length; }, 0);
    const unit = box.dataset.bpeUnit || "bytes";
    const byId = box.dataset.bpeRank !== "list";
    let k = Math.max(0, Math.min(last, Number(box.dataset.bpeStep) || 0));
    // only the link's first story opens at its step: the next text's request goes without it
    const result = box.closest("#bpe-result");
    if (result) result.removeAttribute("hx-vals");
    let timer = null;

    function describe() {
      const D = DeepDive;
      if (k === 0) {
        return [D.el("strong", {}, "Start: "), nBytes + " " + unit + ", one token each, in " + h.pretokens.length +
          " pieces. A pattern first splits the text into words, numbers, punctuation and spaces; merges never cross pieces. " +
          h.steps.length + " merges to go."];
      }
      const st = h.steps[k - 1];
      const parts = [D.el("strong", {}, "Step " + k + " of " + last + ": "), quoted(st.left), " + ", quoted(st.right),
        " → ", quoted(st.merged), " (id " + st.token_id + ")" + (st.count > 1 ? ", " + st.count + " times" : "") + ". "];
      parts.push(k === last
        ? "Done: " + h.tokens.length + " tokens, the same as above."
        : byId ? "Lower ids were learned earlier, so they merge first." : "Merges learned earlier apply first.");
      return parts;
    }

    function render() {
      const changed = new Set(k ? h.steps[k - 1].changes.map(function (c) { return c.pretoken; }) : []);
      const merged = k ? h.steps[k - 1].token_id : null;
      const frag = document.createDocumentFragment();
      states[k].forEach(function (symbols, w) {
        const word = DeepDive.el("span", { class: "bpe-word" });
        symbols.forEach(function (id, i) {
          const isNew = changed.has(w) && id === merged;
          const c = DeepDive.chip(textOf.get(id), i, isNew ? "merged" : "");
          c.title = "id " + id + (isNew ? " · just merged" : "");
          word.append(c);
        });
        frag.append(word);
      });
      words.replaceChildren(frag);
      const first = words.querySelector(".chip");
      if (first) first.tabIndex = 0;
      status.replaceChildren(...describe());
      slider.value = String(k);
      slider.setAttribute("aria-valuetext", "step " + k + " of " + last);
      DeepDive.setParams({ bpe: k ? String(k) : null });
    }

    function go(to) {
      k = Math.max(0, Math.min(last, to));
      render();
      if (k === last) stop();
    }
    function stop() {
      clearInterval(timer);
      timer = null;
      play.setAttribute("aria-pressed", "false");
      play.textContent = "▶ Play";
    }
    function start() {
      if (k === last) go(0);
      play.setAttribute("aria-pressed", "true");
      play.textContent = "Pause";
      timer = setInterval(function () {
        if (!box.isConnected) return stop(); // replaced by a new text
        go(k + 1);
      }, PLAY_MS);
    }

    box.addEventListener("click", function (evt) {
      const b = evt.target.closest("[data-bpe-action]");
      if (!b) return;
      const action = b.dataset.bpeAction;
      if (action === "play") return timer ? stop() : start();
      stop();
      go({ first: 0, back: k - 1, step: k + 1, last: last }[action]);
    });
    slider.addEventListener("input", function () { stop(); go(Number(slider.value)); });
    render();
  }

  DeepDive.onLoad(function (root) {
    DeepDive.within(root, "[data-bpe]").forEach(init);
  });
})();
