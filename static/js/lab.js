/* Shared by the inference and playground pages: reading the JSON API's Server-Sent
 * Events, and small helpers.
 *
 *   Lab.stream(url, body, onEvent, signal)
 *                                      POSTs and calls onEvent(name, data) for each SSE
 *                                      event (EventSource cannot POST, so fetch reads it)
 *   Lab.pct(p)                         a probability a student can read ("42.1%")
 *   Lab.showSettings(form)             writes each sampling setting's value into its <output data-show>
 */
(function () {
  "use strict";

  async function failure(res) {
    let message = "The server answered " + res.status + " " + res.statusText + ".";
    try {
      const body = await res.json();
      if (body && body.message) message = body.message;
    } catch (e) { /* not JSON: keep the status line */ }
    const err = new Error(message);
    err.status = res.status;
    return err;
  }

  async function stream(url, body, onEvent, signal) {
    const res = await fetch(url, {
      method: "POST", headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify(body), signal: signal,
    });
    if (!res.ok) throw await failure(res);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message";
        const data = [];
        block.split("\n").forEach(function (line) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        });
        if (data.length) onEvent(name, JSON.parse(data.join("\n")));
      }
    }
  }

  // the server's rule (app/templating.py pct), from the table it hands every page
  function pct(p) {
    for (const [atLeast, decimals] of DeepDive.constants.pct_steps) {
      if (p >= atLeast) return (p * 100).toFixed(decimals) + "%";
    }
    return p > 0 ? (p * 100).toPrecision(2) + "% (1 in " + Math.round(1 / p).toLocaleString("en") + ")" : "0%";
  }

  // the readouts beside the sampling sliders (Inference and Playground): top-k 0 and top-p 1 read "off"
  function showSettings(form) {
    form.querySelectorAll("[data-show]").forEach(function (o) {
      const v = Number(form.elements[o.dataset.show].value);
      o.textContent = o.dataset.show === "temperature" ? v.toFixed(2)
        : o.dataset.show === "top_k" ? (v === 0 ? "off" : String(v)) : (v >= 1 ? "off" : v.toFixed(2));
    });
  }

  window.Lab = { stream, pct, showSettings };
})();
