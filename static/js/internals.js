/* The internals page: one forward pass of the prompt, from /api/activations.
 *
 * Two requests per prompt: the residual norms, logit lens and top neurons for
 * every position; and the attention of the chosen block (all its heads, so
 * switching heads needs no request). Changing the block asks for that block only.
 */
(function () {
  "use strict";
  const el = DeepDive.el;
  const $ = function (id) { return document.getElementById(id); };
  const NS = "http://www.w3.org/2000/svg";
  const form = $("int-form");
  const prompt = $("int-prompt");
  const layerSelect = $("int-layer");
  const posSelect = $("int-pos");
  const status = $("int-status");
  const LENS_TOP = 3;
  const NEURONS = 5;

  let main = null;        // the norms / lens / neurons answer
  let attn = null;        // {layer, patterns: [head] -> rows}
  let controllers = {};   // in-flight requests by kind, aborted when superseded
  let wantedPos = Number(posSelect.dataset.initial);

  function say(message, kind) {
    status.textContent = message || "";
    status.className = "lab-status" + (kind ? " " + kind : "");
  }

  function svgEl(tag, attrs, text) {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    return n;
  }

  // white -> deep blue, in steps a projector still tells apart
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

  function tokenName(i) { return "“" + main.tokens[i].text + "” (position " + i + ")"; }

  /* ---------------------------------------------------------- heatmap (SVG) */
  // o: rows, cols (label texts), value(r, c) -> number | null, shade(v) -> 0..1,
  //    describe(r, c) -> readout text, readout (element), idle (its text until a cell is picked),
  //    numbers (v -> the text printed in a cell, when cells are big enough)
  function heatmap(svg, o) {
    const cell = o.cols.length > 24 ? 22 : 34;
    const font = 13;
    const rowW = 10 + font * 0.62 * Math.max(4, ...o.rows.map(function (r) { return r.length; }));
    const colH = 10 + font * 0.55 * Math.max(4, ...o.cols.map(function (c) { return c.length; }));
    const W = rowW + o.cols.length * cell + 4;
    const H = colH + o.rows.length * cell + 4;
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    svg.style.width = (W / 16) + "rem"; // rem: presentation mode enlarges it with the text
    svg.replaceChildren();
    o.cols.forEach(function (c, j) {
      const x = rowW + j * cell + cell / 2;
      svg.append(svgEl("text", { x: x, y: colH - 6, class: "col-label", transform: "rotate(-55 " + x + " " + (colH - 6) + ")" }, c));
    });
    o.rows.forEach(function (r, i) {
      svg.append(svgEl("text", { x: rowW - 6, y: colH + i * cell + cell / 2 + 4.5, "text-anchor": "end", class: "row-label" }, r));
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

  function drawAttention() {
    if (!main || !attn || attn.patterns[0].length !== main.tokens.length) return;
    const rows = attn.patterns[head()];
    const names = main.tokens.map(function (t) { return label(t.text, 12); });
    const layer = attn.layer;
    heatmap($("int-attn"), {
      rows: names, cols: names,
      value: function (q, k) { return k <= q ? rows[q][k] : null; },
      shade: Math.sqrt, // small weights stay visible; the readout gives the exact value
      numbers: main.tokens.length <= 12 ? function (v) { return v >= 0.005 ? v.toFixed(2).replace(/^0/, "") : ""; } : null,
      readout: $("int-attn-readout"),
      idle: "Hover over a cell, or focus the chart and use the arrow keys, to read a weight.",
      describe: function (q, k) {
        if (k > q) return tokenName(q) + " cannot look ahead at " + tokenName(k) + ".";
        return "Block " + layer + ", head " + head() + ": " + tokenName(q) + " gives " + Lab.pct(rows[q][k]) +
          " of its attention to " + tokenName(k) + ".";
      },
    });
    $("int-attn").setAttribute("aria-label", "Attention pattern of block " + layer + ", head " + head());
    form.querySelectorAll("svg[data-head]").forEach(function (svg) { thumb(svg, attn.patterns[Number(svg.dataset.head)]); });
  }

  function drawNorms() {
    const r = main.residual_norms;
    const all = r.norms.flat();
    const lo = Math.min(...all);
    const hi = Math.max(...all);
    heatmap($("int-norms"), {
      rows: r.labels, cols: main.tokens.map(function (t) { return label(t.text, 10); }),
      value: function (s, p) { return r.norms[s][p]; },
      shade: function (v) { return hi > lo ? (v - lo) / (hi - lo) : 0.5; },
      numbers: main.tokens.length <= 10 ? function (v) { return v >= 100 ? v.toFixed(0) : v.toFixed(1); } : null,
      readout: $("int-norms-readout"),
      idle: "Lightest " + lo.toFixed(1) + ", darkest " + hi.toFixed(1) +
        ". Hover over a cell, or focus the chart and use the arrow keys.",
      describe: function (s, p) {
        return tokenName(p) + ", " + r.labels[s] + ": length " + r.norms[s][p].toFixed(2) + ".";
      },
    });
  }

  function pos() {
    const n = main.tokens.length;
    return wantedPos < 0 || wantedPos >= n ? n - 1 : wantedPos;
  }

  function drawLens() {
    const ids = main.tokens.map(function (t) { return t.id; });
    const p0 = pos();
    const head = el("tr", {}, el("th", { scope: "col" }, "at token →"));
    main.tokens.forEach(function (t, p) {
      head.append(el("th", { scope: "col", class: p === p0 ? "chosen" : null, "data-pos": p,
        title: "position " + p }, DeepDive.chip(t.text, p)));
    });
    const body = main.logit_lens.map(function (state, s) {
      const row = el("tr", {}, el("th", { scope: "row" },
        s === main.logit_lens.length - 1 ? state.label + ": the prediction" : state.label));
      state.top.forEach(function (top, p) {
        const best = top[0];
        const hit = p + 1 < ids.length && best.id === ids[p + 1];
        const cell = el("td", {
          class: (hit ? "hit" : "") + (p === p0 ? " chosen" : ""),
          title: top.map(function (c) { return "“" + c.text + "” " + Lab.pct(c.prob); }).join(" · ") +
            (hit ? " · matches the next token of the prompt" : ""),
        }, el("span", { class: "lens-token" }, DeepDive.visible(best.text)), el("span", { class: "lens-prob" }, Lab.pct(best.prob)));
        cell.style.background = colour(best.prob);
        cell.style.color = ink(best.prob);
        row.append(cell);
      });
      return row;
    });
    $("int-lens").replaceChildren(el("thead", {}, head), el("tbody", {}, ...body));
  }

  function drawNeurons() {
    const p = pos();
    const max = Math.max(...main.neurons.flatMap(function (l) { return l.top[p].map(function (n) { return n.value; }); }), 1e-9);
    const rows = main.neurons.map(function (layer) {
      return el("tr", {}, el("th", { scope: "row" }, "block " + layer.layer),
        ...layer.top[p].map(function (n) {
          const bar = el("span", { class: "neuron-bar" });
          bar.style.width = Math.max(0, n.value / max * 100) + "%";
          return el("td", { title: "neuron " + n.neuron + " of block " + layer.layer + ": activation " + n.value.toFixed(3) },
            el("span", { class: "neuron-id" }, "#" + n.neuron), el("span", { class: "neuron-value" }, n.value.toFixed(2)), bar);
        }));
    });
    $("int-neurons").replaceChildren(el("caption", {}, "for " + tokenName(p)), el("tbody", {}, ...rows));
  }

  function drawTokens() {
    const p0 = pos();
    $("int-tokens").replaceChildren(...main.tokens.map(function (t, i) {
      const c = DeepDive.chip(t.text, i, i === p0 ? "current" : "");
      c.dataset.pos = i;
      c.title = "position " + i + " · id " + t.id;
      return c;
    }));
    const last = main.tokens.length - 1;
    posSelect.replaceChildren(el("option", { value: "-1" }, "the last one: “" + main.tokens[last].text + "”"),
      ...main.tokens.map(function (t, i) { return el("option", { value: String(i) }, i + ": “" + t.text + "”"); }));
    posSelect.value = String(wantedPos >= 0 && wantedPos <= last ? wantedPos : -1);
  }

  function drawMain() {
    drawTokens();
    drawLens();
    drawNorms();
    drawNeurons();
    drawAttention();
  }

  /* ---------------------------------------------------------- loading */
  function fetchKind(kind, body) {
    if (controllers[kind]) controllers[kind].abort();
    const c = new AbortController();
    controllers[kind] = c;
    return Lab.post("/api/activations", body, c.signal).finally(function () {
      if (controllers[kind] === c) delete controllers[kind];
    });
  }

  function failed(err) {
    if (err.name !== "AbortError") say(err.message, "error");
  }

  function loadAttention() {
    const layer = Number(layerSelect.value);
    return fetchKind("attention", { text: prompt.value, residual_norms: false, attention: [{ layer: layer }] })
      .then(function (r) {
        const patterns = [];
        r.attention.forEach(function (a) { patterns[a.head] = a.pattern; });
        attn = { layer: layer, patterns: patterns };
        drawAttention();
      });
  }

  function loadAll() {
    if (!prompt.value) {
      say("Type a prompt above to look inside.", "info");
      return;
    }
    say("Running the model…");
    main = null; // until both answers are in, neither is drawn against the other's tokens
    attn = null;
    const both = [
      fetchKind("main", { text: prompt.value, logit_lens: LENS_TOP, neurons: NEURONS }).then(function (r) {
        main = r;
      }),
      loadAttention(),
    ];
    Promise.all(both).then(function () { say(""); drawMain(); }, failed);
  }

  form.addEventListener("submit", function (evt) { evt.preventDefault(); });
  prompt.addEventListener("input", Lab.debounce(loadAll, 400));
  layerSelect.addEventListener("change", function () {
    if (main) loadAttention().catch(failed);
  });
  form.addEventListener("change", function (evt) {
    if (evt.target.name === "head") drawAttention();
  });
  function choosePos(p) {
    wantedPos = p;
    if (!main) return;
    drawTokens();
    drawLens();
    drawNeurons();
    DeepDive.setParams({ pos: p < 0 ? null : String(p) });
  }
  posSelect.addEventListener("change", function () { choosePos(Number(posSelect.value)); });
  form.addEventListener("click", function (evt) {
    const t = evt.target.closest("[data-pos]");
    if (t) choosePos(Number(t.dataset.pos));
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

  loadAll();
})();
