/* The internals page: what only the browser can draw of one forward pass.
 *
 * The server renders the token strip, the logit lens and the top neurons
 * (/partials/forward, templates/partials/_forward.html; htmx re-asks for them
 * when the prompt or the position changes). Its #int-data block carries the
 * tokens and the residual norms; from it this script draws
 *   - the residual norms heatmap, and
 *   - the attention heatmap of the chosen block, asked of /api/activations for
 *     all the block's heads (switching heads needs no request; changing the
 *     block asks for that block only), with a thumbnail per head.
 * Both heatmaps read out a cell on hover, or with the arrow keys once focused.
 * The attention and logit lens CSV links (app/routes/downloads.py) follow the
 * prompt, block and head drawn.
 */
(function () {
  "use strict";
  const $ = function (id) { return document.getElementById(id); };
  const NS = "http://www.w3.org/2000/svg";
  const form = $("int-form");
  const prompt = $("int-prompt");
  const layerSelect = $("int-layer");

  let shown;              // the #int-data node drawn from (htmx:load fires once per swapped piece)
  let data = null;        // its content: {tokens: [{text, id}], residual_norms: {labels, norms}}
  let dataPrompt = "";    // the prompt it was computed from
  let attn = null;        // {data, layer, patterns: [head] -> rows}: the attention drawn for data
  let attnRequest = null; // the attention request in flight, aborted when superseded

  function svgEl(tag, attrs, text) {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    return n;
  }

  // white -> deep blue, in steps a projector still tells apart (lab.css's .shade-0 … .shade-9, the logit lens
  // cells the server renders, are this ramp at the middle of each tenth, with the same switch of ink)
  const RAMP = [[255, 255, 255], [205, 218, 252], [129, 157, 240], [54, 88, 204], [22, 41, 107]];
  function colour(t) {
    const x = Math.max(0, Math.min(1, t)) * (RAMP.length - 1);
    const i = Math.min(RAMP.length - 2, Math.floor(x));
    const f = x - i;
    const c = RAMP[i].map(function (v, k) { return Math.round(v + (RAMP[i + 1][k] - v) * f); });
    return "rgb(" + c.join(",") + ")";
  }
  function ink(t) { return t > 0.55 ? "#ffffff" : "#14171c"; }

  function label(text, max) {
    const s = Lab.shown(text);
    return s.length > max ? s.slice(0, max - 1) + "…" : s;
  }

  function tokenName(tokens, i) { return "“" + tokens[i].text + "” (position " + i + ")"; }

  /* ---------------------------------------------------------- heatmap (SVG) */
  const LABELS = 20; // the most labels along each side of a long text's map
  // o: rows, cols (label texts), value(r, c) -> number | null, shade(v) -> 0..1,
  //    describe(r, c) -> readout text, readout (element), idle (its text until a cell is picked),
  //    numbers (v -> the text printed in a cell, when cells are big enough)
  function heatmap(svg, o) {
    const dense = o.cols.length > 24;
    const cell = dense ? 22 : 34;
    // a long text's map shrinks to its panel, and a label on every token would shrink to a few pixels: along a
    // side of many cells, every `step`-th gets a label (at most LABELS), in a font as large as the room between
    // labels (the readout names every cell)
    function side(n) {
      const step = dense ? Math.ceil(n / LABELS) : 1;
      return { step: step, font: step > 1 ? 0.6 * step * cell : 13 };
    }
    const across = side(o.cols.length);
    const down = side(o.rows.length);
    const rowW = 10 + down.font * 0.62 * Math.max(4, ...o.rows.map(function (r) { return r.length; }));
    const colH = 10 + across.font * 0.55 * Math.max(4, ...o.cols.map(function (c) { return c.length; }));
    const W = rowW + o.cols.length * cell + 4;
    const H = colH + o.rows.length * cell + 4;
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    svg.style.width = (W / 16) + "rem"; // rem: presentation mode enlarges it with the text
    svg.replaceChildren();
    function labelled(node, at) {
      if (at.step > 1) node.style.fontSize = at.font + "px"; // else lab.css's 13px
      svg.append(node);
    }
    o.cols.forEach(function (c, j) {
      if (j % across.step) return;
      const x = rowW + j * cell + cell / 2;
      labelled(svgEl("text", { x: x, y: colH - 6, class: "col-label", transform: "rotate(-55 " + x + " " + (colH - 6) + ")" }, c), across);
    });
    o.rows.forEach(function (r, i) {
      if (i % down.step === 0) {
        labelled(svgEl("text", { x: rowW - 6, y: colH + i * cell + cell / 2 + down.font * 0.35, "text-anchor": "end",
          class: "row-label" }, r), down);
      }
      o.cols.forEach(function (_, j) {
        const v = o.value(i, j);
        if (v === null) return;
        const t = o.shade(v);
        svg.append(svgEl("rect", { x: rowW + j * cell, y: colH + i * cell, width: cell - 1, height: cell - 1,
          fill: colour(t), "data-r": i, "data-c": j }));
        if (o.numbers && cell >= 30) {
          svg.append(svgEl("text", { x: rowW + j * cell + cell / 2, y: colH + i * cell + cell / 2 + 4, fill: ink(t),
            "text-anchor": "middle", class: "cell-value" }, o.numbers(v)));
        }
      });
    });
    o.readout.textContent = o.idle;
    const mark = svgEl("rect", { class: "cell-mark", width: cell - 1, height: cell - 1, visibility: "hidden" });
    svg.append(mark);
    let at = null;
    function show(r, c) {
      r = Math.max(0, Math.min(o.rows.length - 1, r));
      c = Math.max(0, Math.min(o.cols.length - 1, c));
      at = [r, c];
      mark.setAttribute("x", rowW + c * cell);
      mark.setAttribute("y", colH + r * cell);
      mark.setAttribute("visibility", "visible");
      o.readout.textContent = o.describe(r, c);
    }
    svg.setAttribute("tabindex", "0");
    svg.onpointerover = function (evt) {
      const t = evt.target;
      if (t.dataset && t.dataset.r !== undefined) show(Number(t.dataset.r), Number(t.dataset.c));
    };
    svg.onkeydown = function (evt) {
      const d = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] }[evt.key];
      if (!d) return;
      evt.preventDefault();
      const [r, c] = at || [o.rows.length - 1, 0];
      show(at ? r + d[0] : r, at ? c + d[1] : c);
    };
  }

  function thumb(svg, rows) {
    const n = rows.length;
    svg.setAttribute("viewBox", "0 0 " + n + " " + n);
    svg.replaceChildren(...rows.flatMap(function (row, q) {
      return row.map(function (w, k) {
        return svgEl("rect", { x: k, y: q, width: 1.02, height: 1.02, fill: colour(Math.sqrt(w)) });
      });
    }));
  }

  /* ---------------------------------------------------------- drawing */
  function head() {
    const checked = form.querySelector("input[name=head]:checked");
    return checked ? Number(checked.value) : 0;
  }

  // each drawing keeps the tokens it was drawn for: a readout names them even after a new prompt's data arrives
  function drawAttention() {
    if (!data || !attn || attn.data !== data) return;
    const tokens = data.tokens;
    const rows = attn.patterns[head()];
    const names = tokens.map(function (t) { return label(t.text, 12); });
    const layer = attn.layer;
    heatmap($("int-attn"), {
      rows: names, cols: names,
      value: function (q, k) { return k <= q ? rows[q][k] : null; },
      shade: Math.sqrt, // small weights stay visible; the readout gives the exact value
      numbers: tokens.length <= 12 ? function (v) { return v >= 0.005 ? v.toFixed(2).replace(/^0/, "") : ""; } : null,
      readout: $("int-attn-readout"),
      idle: "Hover over a cell, or focus the chart and use the arrow keys, to read a weight.",
      describe: function (q, k) {
        if (k > q) return tokenName(tokens, q) + " cannot look ahead at " + tokenName(tokens, k) + ".";
        return "Block " + layer + ", head " + head() + ": " + tokenName(tokens, q) + " gives " + Lab.pct(rows[q][k]) +
          " of its attention to " + tokenName(tokens, k) + ".";
      },
    });
    $("int-attn").setAttribute("aria-label", "Attention pattern of block " + layer + ", head " + head());
    csvLink("int-attn-csv", "/download/attention.csv", { prompt: dataPrompt, layer: layer, head: head() });
    form.querySelectorAll("svg[data-head]").forEach(function (svg) { thumb(svg, attn.patterns[Number(svg.dataset.head)]); });
  }

  function drawNorms() {
    const tokens = data.tokens;
    const r = data.residual_norms;
    const all = r.norms.flat();
    const lo = Math.min(...all);
    const hi = Math.max(...all);
    heatmap($("int-norms"), {
      rows: r.labels, cols: tokens.map(function (t) { return label(t.text, 10); }),
      value: function (s, p) { return r.norms[s][p]; },
      shade: function (v) { return hi > lo ? (v - lo) / (hi - lo) : 0.5; },
      numbers: tokens.length <= 10 ? function (v) { return v >= 100 ? v.toFixed(0) : v.toFixed(1); } : null,
      readout: $("int-norms-readout"),
      idle: "Lightest " + lo.toFixed(1) + ", darkest " + hi.toFixed(1) +
        ". Hover over a cell, or focus the chart and use the arrow keys.",
      describe: function (s, p) {
        return tokenName(tokens, p) + ", " + r.labels[s] + ": length " + r.norms[s][p].toFixed(2) + ".";
      },
    });
  }

  // no forward pass to show (the partial answered with a message): nothing stale stays drawn
  function clear() {
    ["int-attn", "int-norms"].forEach(function (id) {
      const svg = $(id);
      svg.replaceChildren();
      svg.removeAttribute("tabindex");
      svg.onpointerover = svg.onkeydown = null;
    });
    $("int-attn").setAttribute("aria-label", "Attention pattern");
    ["int-attn-readout", "int-norms-readout"].forEach(function (id) { $(id).textContent = ""; });
    form.querySelectorAll("svg[data-head]").forEach(function (svg) { svg.replaceChildren(); });
  }

  // a figure's CSV link, for the state drawn
  function csvLink(id, path, params) {
    const link = $(id);
    if (link) link.setAttribute("href", path + "?" + new URLSearchParams(params));
  }

  /* ---------------------------------------------------------- loading */
  // the attention of the chosen block for the tokens shown, by their ids: it always matches the partial's tokens
  function loadAttention() {
    if (!data) return;
    const forData = data;
    const layer = Number(layerSelect.value);
    if (attnRequest) attnRequest.abort();
    const c = new AbortController();
    attnRequest = c;
    Lab.post("/api/activations", {
      ids: forData.tokens.map(function (t) { return t.id; }), residual_norms: false, attention: [{ layer: layer }],
    }, c.signal).then(function (r) {
      const patterns = [];
      r.attention.forEach(function (a) { patterns[a.head] = a.pattern; });
      attn = { data: forData, layer: layer, patterns: patterns };
      drawAttention();
    }, function (err) {
      if (err.name !== "AbortError") $("int-attn-readout").textContent = err.message;
    }).finally(function () {
      if (attnRequest === c) attnRequest = null;
    });
  }

  // the page, and each answer htmx swaps into #int-forward, may hold a new data block
  DeepDive.onLoad(function () {
    const node = $("int-data");
    if (node === shown) return; // another swap (the head finder's), or another piece of the same answer
    shown = node;
    data = node ? JSON.parse(node.textContent) : null;
    dataPrompt = prompt.value;
    if (!data) {
      if (attnRequest) attnRequest.abort();
      attn = null;
      clear();
      return;
    }
    csvLink("int-lens-csv", "/download/lens.csv", { prompt: dataPrompt });
    drawNorms();
    loadAttention();
  });

  // the off buttons on the thumbnails and the neurons show whether their part is in the switched-off set (#int-off,
  // which every answer of /partials/ablate replaces); a thumbnail's head is the shown block's
  function markOff() {
    const field = $("int-off");
    if (!field) return;
    const off = new Set(field.value.split(",").map(function (item) { return item.split(":")[0]; }));
    form.querySelectorAll("button[data-head-off]").forEach(function (b) {
      b.setAttribute("aria-pressed", String(off.has("h" + layerSelect.value + "." + b.dataset.headOff)));
    });
    form.querySelectorAll("button[data-off-item]").forEach(function (b) {
      b.setAttribute("aria-pressed", String(off.has(b.dataset.offItem)));
    });
  }
  document.body.addEventListener("htmx:load", markOff);
  markOff();

  form.addEventListener("submit", function (evt) { evt.preventDefault(); });
  layerSelect.addEventListener("change", loadAttention);
  layerSelect.addEventListener("change", markOff);
  form.addEventListener("change", function (evt) {
    if (evt.target.name === "head") drawAttention();
  });

  // the head finder (an htmx partial): a row shows that head's heatmap, on the probe's text if it was measured there
  function fire(node, type) { node.dispatchEvent(new Event(type, { bubbles: true })); }
  document.getElementById("int-heads").addEventListener("click", function (evt) {
    const pick = evt.target.closest("[data-head-pick]");
    if (!pick) return;
    const text = pick.closest("table").dataset.probeText;
    if (text && prompt.value !== text) {
      prompt.value = text;
      fire(prompt, "input");
    }
    layerSelect.value = pick.dataset.layer;
    fire(layerSelect, "change");
    const radio = form.querySelector('input[name="head"][value="' + pick.dataset.head + '"]');
    radio.checked = true;
    fire(radio, "change");
    document.getElementById("attn-h").scrollIntoView({ block: "start" });
  });
  // ranking by another score measures again where the table was measured
  document.getElementById("int-sort").addEventListener("change", function () {
    const table = document.querySelector("#int-heads table");
    if (!table) return;
    const on = table.dataset.probeText ? "probe" : "prompt";
    htmx.trigger(document.querySelector('#int-finder [hx-vals*="' + on + '"]'), "click");
  });
})();
