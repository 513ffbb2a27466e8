/* The playground: streamed generation from /playground/generate, whose Server-Sent Events carry HTML the server
 * draws into one column of this page (app/views/writing.py): the chips coloured by the model's own probability,
 * the counts, the sentence that ends it. Here: the request, the stream handed to htmx event by event, a Stop that
 * aborts it (the server stops generating when the connection closes), the columns of a comparison (temperatures,
 * or a second model beside), and the presets.
 */
(function () {
  "use strict";
  const $ = function (id) { return document.getElementById(id); };
  const form = $("pg-form");
  const prompt = $("pg-prompt");
  const STOPS = DeepDive.constants.stops;
  const IDLE = new Map([$("pg-detail"), $("pg-cmp-detail"), $("pg-models-detail")].filter(Boolean)
    .map(function (box) { return [box, [...box.childNodes]]; }));
  let controller = null; // the running generation(s)

  function chosen(name) {
    const field = form.elements[name];
    return field ? field.value : "";
  }

  function request() {
    const f = form.elements;
    const seed = f.seed.value.trim();
    return {
      prompt: prompt.value, n_top: 5, model: chosen("model") || "local",
      // under a chat preset an instruct model reads the transcript in its own chat template
      chat: Boolean(form.querySelector("[data-preset][data-chat][aria-pressed=true]")),
      seed: seed === "" ? Math.floor(Math.random() * 1e6) : Math.floor(Number(seed)),
      temperature: Number(f.temperature.value), top_k: Number(f.top_k.value), top_p: Number(f.top_p.value),
      max_new_tokens: Math.max(1, Math.floor(Number(f.max_new_tokens.value)) || 1), stop: STOPS[f.stop.value] || [],
    };
  }

  function showPrompt(box, text) {
    box.replaceChildren(DeepDive.el("span", { class: "lab-prompt-text" }, text));
  }

  function say(column, stat, text, error) {
    const node = column.querySelector("[data-stat=" + stat + "]");
    if (node) { node.textContent = text; node.classList.toggle("error", Boolean(error)); }
  }

  // EventSource cannot POST, so fetch reads the stream; htmx swaps each event's out-of-band parts into place
  async function run(column, body, signal) {
    showPrompt(column.querySelector(".tokens"), body.prompt);
    ["tokens", "speed", "first"].forEach(function (k) { say(column, k, "–"); });
    say(column, "seed", String(body.seed));
    say(column, "finish", "Waiting for a turn…"); // in a full room the request waits before the model starts
    let done = false;
    try {
      const res = await fetch("/playground/generate", {
        method: "POST", headers: { "Content-Type": "application/json" }, signal: signal,
        body: JSON.stringify(Object.assign({ out: column.id }, body)),
      });
      if (!res.ok) {
        const said = await res.json().catch(function () { return null; });
        throw new Error((said && said.message) || "The server answered " + res.status + " " + res.statusText + ".");
      }
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (let read = await reader.read(); !read.done; read = await reader.read()) {
        const blocks = (buffer + read.value).split("\n\n");
        buffer = blocks.pop();
        blocks.forEach(function (block) {
          done = done || block.startsWith("event: done");
          const lines = block.split("\n").filter(function (l) { return l.startsWith("data:"); });
          htmx.swap(column, lines.map(function (l) { return l.slice(5).replace(/^ /, ""); }).join("\n"), { swapStyle: "none" });
        });
      }
      if (!done) throw new Error("The stream ended early: the server may have stopped. Try again.");
    } catch (err) {
      const stopped = err.name === "AbortError";
      const count = parseInt(column.querySelector("[data-stat=tokens]").textContent, 10) || 0;
      say(column, "finish", stopped ? "Stopped by you after " + count + " tokens." : err.message, !stopped);
    }
  }

  async function start(kind) {
    if (controller) controller.abort();
    const mine = new AbortController();
    controller = mine;
    $("pg-halt").disabled = false;
    form.querySelectorAll("[data-run]").forEach(function (b) { b.disabled = true; });
    const base = request();
    // the hover boxes describe the last run's tokens: back to their hints
    IDLE.forEach(function (nodes, box) { box.replaceChildren(...nodes.map(function (n) { return n.cloneNode(true); })); });
    const beside = kind === "one" && chosen("compare");
    $("pg-one").hidden = Boolean(beside);
    $("pg-compare").hidden = kind !== "compare";
    if ($("pg-models")) $("pg-models").hidden = !beside;
    let runs;
    if (beside) {
      runs = Array.from($("pg-model-columns").children).map(function (col) {
        const field = form.elements[col.dataset.modelField];
        const name = field.selectedOptions[0] ? field.selectedOptions[0].textContent : "";
        col.setAttribute("aria-label", name);
        col.querySelector("h3").textContent = name;
        return run(col, Object.assign({}, base, { model: field.value || "local" }), mine.signal);
      });
    } else if (kind === "one") {
      runs = [run($("pg-one"), base, mine.signal)];
    } else {
      runs = Array.from($("pg-columns").children).map(function (col) {
        return run(col, Object.assign({}, base, { temperature: Number(col.dataset.temperature) }), mine.signal);
      });
    }
    try {
      await Promise.all(runs);
    } finally {
      if (controller === mine) {
        controller = null;
        $("pg-halt").disabled = true;
        form.querySelectorAll("[data-run]").forEach(function (b) { b.disabled = false; });
      }
    }
  }

  form.addEventListener("submit", function (evt) {
    evt.preventDefault();
    start("one");
  });
  let applying = false; // a preset is filling the form: its own input events do not undo it
  form.addEventListener("click", function (evt) {
    if (evt.target.closest("button[data-run=compare]")) start("compare");
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
    prompt.dispatchEvent(new Event("input", { bubbles: true })); // the URL follows (deepdive.js)
    applying = false;
    prompt.focus();
    prompt.setSelectionRange(prompt.value.length, prompt.value.length);
  });
  form.addEventListener("input", function (evt) {
    if (evt.target === prompt && !applying && form.elements.preset.value) {
      form.elements.preset.value = ""; // an edited prompt is no longer the preset
      form.querySelectorAll("[data-preset]").forEach(function (b) { b.setAttribute("aria-pressed", "false"); });
      $("pg-note").textContent = "";
    }
    Lab.showSettings(form);
    if (evt.target === prompt && !controller) showPrompt($("pg-output"), prompt.value);
  });
  document.addEventListener("keydown", function (evt) {
    if (evt.key === "Escape" && controller) controller.abort();
  });
  Lab.showSettings(form);
  showPrompt($("pg-output"), prompt.value);
})();
