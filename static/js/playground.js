/* The playground: streamed generation from /playground/generate (/api/generate's events, from whichever model
 * the page chose: app/serving/sources.py), tokens coloured by the model's own probability, a Stop that aborts the
 * request (the server stops generating when the connection closes), and the same prompt at several temperatures
 * side by side. Where the server has more than one model, a second chosen model writes beside it. Under the chat
 * preset an instruct model's stream starts with the prompt as its chat template wrote it, special tokens marked.
 */
(function () {
  "use strict";
  const el = DeepDive.el;
  const $ = function (id) { return document.getElementById(id); };
  const form = $("pg-form");
  const prompt = $("pg-prompt");
  const stopButton = $("pg-halt");
  const STOPS = DeepDive.constants.stops;
  const BINS = DeepDive.constants.loss_bins; // the training page's loss colours: -ln p at each edge

  let controller = null; // the running generation(s)
  const IDLE = new Map([$("pg-detail"), $("pg-cmp-detail"), $("pg-models-detail")].filter(Boolean)
    .map(function (box) { return [box, [...box.childNodes]]; }));
  const MAIN = "local"; // app/serving/sources.py: the loaded model

  // the request body for the model that writes. Under a chat preset an instruct model reads the transcript in its
  // own chat template.
  function request(model, body) {
    const chat = Boolean(form.querySelector("[data-preset][data-chat][aria-pressed=true]"));
    return Object.assign({}, body, { model: model || MAIN, chat: chat });
  }

  // the prompt as the chat template wrote it: its text, and each special token a marked chip
  function templated(parts) {
    const first = parts.find(function (p) { return p.special; });
    return parts.map(function (p) {
      return p.special ? el("span", {
        class: "chip eot chat-special", tabindex: p === first ? "0" : "-1",
        title: p.text + " · id " + p.id + " · a special token from the model's chat template: one token, " +
          "where the same characters typed by hand are several ordinary ones",
      }, p.text) : el("span", { class: "lab-prompt-text" }, p.text);
    });
  }

  function chosen(name) {
    const field = form.elements[name];
    return field ? field.value : "";
  }

  function label(name) {
    const field = form.elements[name];
    return field && field.selectedOptions[0] ? field.selectedOptions[0].textContent : "";
  }

  function settings() {
    const f = form.elements;
    return {
      temperature: Number(f.temperature.value), top_k: Number(f.top_k.value), top_p: Number(f.top_p.value),
      max_new_tokens: Math.max(1, Math.floor(Number(f.max_new_tokens.value)) || 1),
      stop: STOPS[f.stop.value] || [],
    };
  }

  function seed() {
    const v = form.elements.seed.value.trim();
    return v === "" ? Math.floor(Math.random() * 1e6) : Math.floor(Number(v));
  }

  function lossClass(p) {
    const loss = -Math.log(p);
    return "loss-" + BINS.filter(function (b) { return loss >= b; }).length;
  }

  const REASONS = {
    length: "Stopped at the token limit.",
    eos: "The model chose " + DeepDive.constants.eos_text + ": it thinks the text is finished.",
    stop: "Stopped at the stop text.",
  };

  /* The model wrote the stop text before anything else: nothing shows on a projector, so say what happened, naming the
   * speaker whose line the prompt ends on ("Assistant:") where it ends on one. */
  function endedAtOnce(prompt) {
    const speaker = /(?:^|\n)([A-Z][\w ]{0,24}):[^\n]*$/.exec(prompt);
    return "The model ended " + (speaker ? "the " + speaker[1] + "'s line" : "the text") +
      " at once: its first token was the stop text.";
  }

  /* ---------------------------------------------------------- one stream into one output */
  // out: {text (the .tokens element), stats (element holding [data-stat] fields) }
  async function run(out, body, signal, model) {
    out.text.replaceChildren(el("span", { class: "lab-prompt-text" }, body.prompt));
    const stat = function (name, value) {
      const node = out.stats.querySelector("[data-stat=" + name + "]");
      if (node) { node.textContent = value; node.classList.remove("error"); }
      return node;
    };
    ["tokens", "speed", "first"].forEach(function (k) { stat(k, "–"); });
    stat("seed", String(body.seed));
    // in a full room the request waits its turn before the model starts: say so until the first token comes
    stat("finish", "Waiting for a turn…");
    let count = 0;
    let done = false;
    try {
      await Lab.stream("/playground/generate", request(model, body), function (name, data) {
        if (name === "prompt") {
          out.text.replaceChildren(...templated(data.parts));
        } else if (name === "token") {
          if (!count) stat("finish", "Writing…");
          count += 1;
          stat("tokens", String(count));
          if (!data.text) return; // part of a character: its text comes with the next token
          // a model server sends the model's own alternatives only, and no chance after the settings
          const dice = data.after.length ? data.after : data.before;
          const alternatives = dice.map(function (c) { return "“" + c.text + "” " + Lab.pct(c.prob); }).join(", ");
          const chip = el("span", {
            class: "chip " + lossClass(data.raw_prob), tabindex: out.text.querySelector(".chip") ? "-1" : "0",
            title: (data.prob === null ? "" : "chance " + Lab.pct(data.prob) + " · ") +
              (data.raw_prob === null ? "" : "the model's own probability " + Lab.pct(data.raw_prob) + " · ") +
              "token " + (data.step + 1) + (alternatives ? " · " + (data.after.length ? "the dice chose among: "
                : "the model's most likely: ") + alternatives : ""),
          }, DeepDive.visible(data.text));
          out.text.append(chip);
        } else if (name === "done") {
          done = true;
          if (data.text) out.text.append(el("span", {}, data.text));
          stat("tokens", String(data.completion_tokens));
          stat("speed", data.timings.tokens_per_second.toFixed(1));
          stat("first", data.timings.first_token_ms === null ? "–" : Math.round(data.timings.first_token_ms) + " ms");
          const f = stat("finish", data.message ? data.message || "Generation failed."
            : (data.finish_reason === "stop" && !out.text.querySelector(".chip") && !data.text ? endedAtOnce(body.prompt)
              : REASONS[data.finish_reason]) + (data.prompt_tokens === null ? " " : " " + data.prompt_tokens +
              " prompt tokens, ") + data.completion_tokens + " written.");
          if (f && data.message) f.classList.add("error");
        }
      }, signal);
      if (!done) throw new Error("The stream ended early: the server may have stopped. Try again.");
    } catch (err) {
      const f = stat("finish", err.name === "AbortError" ? "Stopped by you after " + count + " tokens." : err.message);
      if (f && err.name !== "AbortError") f.classList.add("error");
    }
  }

  /* ---------------------------------------------------------- running */
  async function start(kind) {
    if (controller) controller.abort();
    const mine = new AbortController();
    controller = mine;
    stopButton.disabled = false;
    form.querySelectorAll("[data-run]").forEach(function (b) { b.disabled = true; });
    const base = Object.assign({ prompt: prompt.value, seed: seed(), n_top: 5 }, settings());
    // the hover boxes describe the last run's tokens: back to their hints
    IDLE.forEach(function (nodes, box) { box.replaceChildren(...nodes.map(function (n) { return n.cloneNode(true); })); });
    try {
      const beside = chosen("compare");
      // the columns are the page's own (templates/playground.html): each run writes into them afresh
      if (kind === "one" && beside) {
        $("pg-compare").hidden = true;
        $("pg-one").hidden = true;
        $("pg-models").hidden = false;
        const columns = Array.from($("pg-model-columns").children);
        await Promise.all(columns.map(function (col) {
          const field = col.dataset.modelField;
          col.setAttribute("aria-label", label(field));
          col.querySelector("h3").textContent = label(field);
          return run({ text: col.querySelector(".tokens"), stats: col }, base, mine.signal, chosen(field));
        }));
      } else if (kind === "one") {
        $("pg-compare").hidden = true;
        if ($("pg-models")) $("pg-models").hidden = true;
        $("pg-one").hidden = false;
        await run({ text: $("pg-output"), stats: $("pg-one") }, base, mine.signal, chosen("model"));
      } else {
        if ($("pg-models")) $("pg-models").hidden = true;
        $("pg-one").hidden = false;
        $("pg-compare").hidden = false;
        await Promise.all(Array.from($("pg-columns").children).map(function (col) {
          return run({ text: col.querySelector(".tokens"), stats: col },
            Object.assign({}, base, { temperature: Number(col.dataset.temperature) }), mine.signal, chosen("model"));
        }));
      }
    } finally {
      if (controller === mine) {
        controller = null;
        stopButton.disabled = true;
        form.querySelectorAll("[data-run]").forEach(function (b) { b.disabled = false; });
      }
    }
  }

  /* ---------------------------------------------------------- wiring */
  form.addEventListener("submit", function (evt) {
    evt.preventDefault();
    start("one");
  });
  form.addEventListener("click", function (evt) {
    const run = evt.target.closest("button[data-run=compare]");
    if (run) start("compare");
    if (evt.target.closest("#pg-halt") && controller) controller.abort();
    const preset = evt.target.closest("[data-preset]");
    if (!preset) return;
    const d = preset.dataset;
    applying = true;
    form.elements.preset.value = d.preset;
    form.querySelectorAll("[data-preset]").forEach(function (b) { b.setAttribute("aria-pressed", String(b === preset)); });
    prompt.value = d.prompt;
    if (d.temperature !== undefined) form.elements.temperature.value = d.temperature;
    if (d.max !== undefined) form.elements.max_new_tokens.value = d.max;
    if (d.stop !== undefined) form.elements.stop.value = d.stop;
    $("pg-note").textContent = d.note || "";
    Lab.showSettings(form);
    prompt.dispatchEvent(new Event("input", { bubbles: true })); // the URL follows (deepdive.js)
    applying = false;
    prompt.focus();
    prompt.setSelectionRange(prompt.value.length, prompt.value.length);
  });
  let applying = false; // a preset is filling the form: its own input events do not undo it
  form.addEventListener("input", function (evt) {
    if (evt.target === prompt && !applying && form.elements.preset.value) {
      form.elements.preset.value = ""; // an edited prompt is no longer the preset
      form.querySelectorAll("[data-preset]").forEach(function (b) { b.setAttribute("aria-pressed", "false"); });
      $("pg-note").textContent = "";
    }
    Lab.showSettings(form);
    if (evt.target === prompt && !controller) {
      $("pg-output").replaceChildren(el("span", { class: "lab-prompt-text" }, prompt.value));
    }
  });
  document.addEventListener("keydown", function (evt) {
    if (evt.key === "Escape" && controller) controller.abort();
  });
  Lab.showSettings(form);
  $("pg-output").replaceChildren(el("span", { class: "lab-prompt-text" }, prompt.value));
})();
