/* The inference stepper: the next-token distribution as bars, redrawn as the
 * settings change, and the steps taken (sampled, most likely, or clicked).
 *
 * The text is the prompt plus each step's text, sent as text (the server
 * tokenizes it), so the bars and a seeded sample always see the same tokens.
 * Sampling is done by the server (/api/generate, one token) with seed + step
 * number, so undo and sample again draws the same token.
 */
(function () {
  "use strict";
  const el = DeepDive.el;
  const $ = function (id) { return document.getElementById(id); };
  const form = $("inf-form");
  const prompt = $("inf-prompt");
  const seedInput = $("inf-seed");
  const bars = $("inf-bars");
  const status = $("inf-status");
  const VOCAB = Number(form.dataset.vocab);
  const EOT = VOCAB - 1; // <|endoftext|> is GPT-2's last token

  const steps = [];       // {text, id, how, prob, raw}
  let dist = null;        // the last /api/next-token answer
  let distKey = null;     // the request it answered
  let loading = null;     // {key, promise, controller} while one is in flight
  let busy = false;       // a step is being taken: ignore further keys and clicks

  function text() { return prompt.value + steps.map(function (s) { return s.text; }).join(""); }

  function settings() {
    return {
      temperature: Number(form.elements.temperature.value),
      top_k: Number(form.elements.top_k.value),
      top_p: Number(form.elements.top_p.value),
    };
  }

  function seedNow() { return (Math.max(0, Math.floor(Number(seedInput.value))) || 0) + steps.length; }

  function say(message, kind) {
    status.textContent = message || "";
    status.className = "lab-status" + (kind ? " " + kind : "");
  }

  /* ---------------------------------------------------------- the distribution */
  function request() {
    return Object.assign({ text: text(), n: Number(form.elements.n.value) }, settings());
  }

  // the distribution for the current text and settings; reuses a finished or running request
  function ready() {
    const body = request();
    const key = JSON.stringify(body);
    if (dist && distKey === key) return Promise.resolve(dist);
    if (loading && loading.key === key) return loading.promise;
    if (loading) loading.controller.abort();
    if (!body.text) {
      bars.replaceChildren(el("p", { class: "message" }, "Type a prompt above to see what could come next."));
      dist = null;
      return Promise.resolve(null);
    }
    const controller = new AbortController();
    bars.setAttribute("aria-busy", "true");
    const promise = Lab.post("/api/next-token", body, controller.signal).then(function (r) {
      dist = r;
      distKey = key;
      draw(r, body);
      return r;
    }, function (err) {
      if (err.name === "AbortError") throw err;
      dist = null;
      bars.replaceChildren(el("p", { class: "message error", role: "alert" }, err.message));
      return null;
    }).finally(function () {
      if (loading && loading.key === key) { loading = null; bars.setAttribute("aria-busy", "false"); }
    });
    loading = { key: key, promise: promise, controller: controller };
    return promise;
  }

  function refresh() { ready().catch(function () { /* replaced by a newer request */ }); }
  const refreshSoon = Lab.debounce(refresh, 120);

  function cutReason(rank, s) {
    if (s.temperature === 0) return "temperature 0 keeps only the top one";
    if (s.top_k > 0 && rank > s.top_k) return "cut by top-k";
    return "cut by top-p";
  }

  function draw(r, s) {
    const used = new Map(r.after.map(function (c) { return [c.id, c.prob]; }));
    const rows = r.before.map(function (c, i) {
      const p = used.get(c.id) || 0;
      const cut = !used.has(c.id);
      const model = el("span", { class: "lab-bar-model" });
      const now = el("span", { class: "lab-bar-used" });
      model.style.width = (c.prob * 100) + "%";
      now.style.width = (p * 100) + "%";
      return el("button", {
        type: "button", class: "lab-bar" + (cut ? " cut" : ""), "data-id": c.id,
        "aria-label": "Choose “" + c.text + "”: " + (cut ? cutReason(i + 1, s) : Lab.pct(p) + " chance now") +
          ", the model's own probability " + Lab.pct(c.prob),
      },
      el("span", { class: "lab-bar-rank", "aria-hidden": "true" }, String(i + 1)),
      el("span", { class: "lab-bar-token" }, DeepDive.visible(c.text)),
      el("span", { class: "lab-bar-track", "aria-hidden": "true" }, model, now),
      el("span", { class: "lab-bar-value", "aria-hidden": "true" }, cut ? cutReason(i + 1, s) : Lab.pct(p)),
      el("span", { class: "lab-bar-own", "aria-hidden": "true" }, "model " + Lab.pct(c.prob)));
    });
    // the rest of the vocabulary, so the bars visibly do not add up to everything
    const shownNow = r.before.reduce(function (sum, c) { return sum + (used.get(c.id) || 0); }, 0);
    const rest = function (covered) { return covered > 1 - 1e-6 ? 0 : 1 - covered; }; // no float dust
    const restNow = rest(shownNow);
    const restModel = rest(r.mass);
    const rm = el("span", { class: "lab-bar-model" });
    const rn = el("span", { class: "lab-bar-used" });
    rm.style.width = (restModel * 100) + "%";
    rn.style.width = (restNow * 100) + "%";
    rows.push(el("div", { class: "lab-bar rest" },
      el("span", { class: "lab-bar-rank" }),
      el("span", { class: "lab-bar-token" }, "all " + (VOCAB - r.before.length).toLocaleString() + " others"),
      el("span", { class: "lab-bar-track", "aria-hidden": "true" }, rm, rn),
      el("span", { class: "lab-bar-value" }, Lab.pct(restNow)),
      el("span", { class: "lab-bar-own" }, "model " + Lab.pct(restModel))));
    const scale = el("span", { class: "lab-scale-track" }, el("span", {}, "0%"), el("span", {}, "50%"), el("span", {}, "100%"));
    bars.replaceChildren(el("div", { class: "lab-bar lab-bar-scale", "aria-hidden": "true" },
      el("span"), el("span"), scale, el("span"), el("span")), ...rows);

    $("inf-entropy").textContent = r.entropy.toFixed(2) + " nats";
    $("inf-entropy-after").textContent = r.entropy_after.toFixed(2) + " nats";
    $("inf-support").textContent = r.support.toLocaleString();
    const among = function (h) {
      const n = Math.max(1, Math.round(Math.exp(h)));
      return n.toLocaleString() + (n === 1 ? " token" : " tokens");
    };
    $("inf-entropy-note").textContent = "The model is as unsure as if it had to choose fairly among about " +
      among(r.entropy) + "; after the settings, about " + among(r.entropy_after) + ".";
  }

  /* ---------------------------------------------------------- steps */
  function drawText() {
    const out = [el("span", { class: "lab-prompt-text" }, DeepDive.visible(prompt.value))];
    steps.forEach(function (s, i) {
      const c = DeepDive.chip(s.text, i, "lab-new");
      c.title = "step " + (i + 1) + " · " + s.how + " · chance " + Lab.pct(s.prob);
      out.push(c);
    });
    $("inf-sofar").replaceChildren(...out);
    const rows = steps.map(function (s, i) {
      return el("tr", {},
        el("td", { class: "r" }, String(i + 1)),
        el("td", { class: "show-ws" }, DeepDive.chip(s.text, i)),
        el("td", {}, s.how),
        el("td", { class: "r" }, Lab.pct(s.prob)),
        el("td", { class: "r" }, Lab.pct(s.raw)));
    });
    $("inf-history").replaceChildren(...rows.reverse());
    $("inf-history-empty").hidden = steps.length > 0;
    const base = Math.max(0, Math.floor(Number(seedInput.value))) || 0;
    $("inf-seed-now").textContent = "next sample: seed " + base + " + step " + steps.length + " = " + seedNow();
  }

  function ended(reason) {
    say(reason === "eos"
      ? "The model chose <|endoftext|>: it thinks the text is finished. Undo, change the seed, or start over."
      : "The text fills the model's whole context of " + form.dataset.nCtx + " tokens: it cannot read any more.",
    "info");
  }

  function add(step) {
    steps.push(step);
    say("");
    drawText();
    refresh();
  }

  // one action at a time; an action that fails says why and leaves the steps as they were
  async function act(fn) {
    if (busy) return;
    busy = true;
    try { await fn(); } catch (err) {
      if (err.name !== "AbortError") say(err.message, "error");
    } finally { busy = false; }
  }

  function choose(c, how) {
    if (c.id === EOT) { ended("eos"); return; }
    const after = dist.after.find(function (a) { return a.id === c.id; });
    add({ text: c.text, id: c.id, how: how, prob: after ? after.prob : 0, raw: c.prob });
  }

  function greedy() {
    return act(async function () {
      const r = await ready();
      if (r) choose(r.before[0], "the most likely");
    });
  }

  function sample() {
    return act(async function () {
      const r = await ready();
      if (!r) return;
      const seed = seedNow();
      let token = null;
      let done = null;
      await Lab.stream("/api/generate", Object.assign({ prompt: text(), max_new_tokens: 1, seed: seed, n_top: 0 },
        settings()), function (name, data) {
        if (name === "token") token = data;
        else if (name === "done") done = data;
      });
      if (done && done.message) throw new Error(done.message || "Sampling failed.");
      if (!token) { ended(done ? done.finish_reason : "length"); return; }
      add({ text: token.text + (done ? done.text : ""), id: token.id, how: "sampled, seed " + seed,
        prob: token.prob, raw: token.raw_prob });
    });
  }

  function undo() {
    if (busy || !steps.length) return;
    steps.pop();
    say("");
    drawText();
    refresh();
  }

  function reset() {
    if (busy) return;
    steps.length = 0;
    say("");
    drawText();
    refresh();
  }

  /* ---------------------------------------------------------- wiring */
  function showSettings() {
    const s = settings();
    form.querySelectorAll("[data-show]").forEach(function (o) {
      const v = s[o.dataset.show];
      o.textContent = o.dataset.show === "temperature" ? v.toFixed(2)
        : o.dataset.show === "top_k" ? (v === 0 ? "off" : String(v))
          : (v >= 1 ? "off" : v.toFixed(2));
    });
  }

  form.addEventListener("submit", function (evt) { evt.preventDefault(); });
  form.addEventListener("input", function (evt) {
    if (evt.target === prompt) {
      steps.length = 0;
      say("");
      drawText();
    }
    if (evt.target === seedInput) { drawText(); return; }
    showSettings();
    refreshSoon();
  });
  form.addEventListener("click", function (evt) {
    const b = evt.target.closest("button[data-action]");
    if (b) ({ sample: sample, greedy: greedy, undo: undo, reset: reset })[b.dataset.action]();
  });
  bars.addEventListener("click", function (evt) {
    const b = evt.target.closest("button.lab-bar");
    if (!b || !dist) return;
    const id = Number(b.dataset.id);
    const c = dist.before.find(function (x) { return x.id === id; });
    if (c) act(async function () { choose(c, "chosen by hand"); });
  });
  document.addEventListener("keydown", function (evt) {
    if (evt.repeat || evt.ctrlKey || evt.metaKey || evt.altKey || Lab.isTyping(evt)) return;
    if (evt.key === " ") {
      if (evt.target.closest && evt.target.closest("button, a, summary")) return; // Space presses those itself
      evt.preventDefault();
      sample();
    } else if (evt.key === "ArrowRight") {
      evt.preventDefault();
      greedy();
    } else if (evt.key === "ArrowLeft") {
      evt.preventDefault();
      undo();
    }
  });

  showSettings();
  drawText();
  refresh();
})();
