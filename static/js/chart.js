/* Line charts drawn into an <svg> from a JSON data block, with no library.
 *
 * Markup:
 *   <div data-line-chart="ID">
 *     <svg class="chart" viewBox="0 0 800 360" role="img" aria-label="..."></svg>
 *     <p class="chart-readout" aria-live="polite"></p>
 *   </div>
 *   <script type="application/json" id="ID">{spec as JSON}</script>
 * Spec: {x_label, y_label, x_format: "si" | "int",
 *        series: [{label, class, points: [[x, y], ...], dots?: true}],
 *        marks?: [{x, label, class?}]}   (vertical lines, e.g. where a training stage or phase began;
 *        labels that would overprint go on the next row down)
 * Each series is a path with the given CSS class (colours live in deepdive.css).
 * Pointer or arrow keys (the svg is focusable) pick an x; the readout names
 * every series' value there.
 */
(function () {
  "use strict";
  const NS = "http://www.w3.org/2000/svg";
  const M = { left: 64, right: 18, top: 14, bottom: 50 };

  function svgEl(tag, attrs, text) {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    return n;
  }

  function si(v) {
    const a = Math.abs(v);
    for (const [size, unit] of [[1e9, "B"], [1e6, "M"], [1e3, "k"]]) {
      if (a >= size) return +(v / size).toPrecision(3) + " " + unit;
    }
    return String(+v.toPrecision(3));
  }

  function niceTicks(lo, hi, count) {
    const span = hi - lo || 1;
    const raw = span / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map(function (m) { return m * mag; }).find(function (s) { return span / s <= count; });
    const ticks = [];
    const end = Math.ceil(hi / step - 1e-9) * step;
    for (let t = Math.floor(lo / step + 1e-9) * step; t <= end + step * 1e-9; t += step) ticks.push(+t.toPrecision(12));
    return ticks;
  }

  function draw(wrap) {
    const spec = DeepDive.readJSON(wrap.dataset.lineChart);
    const svg = wrap.querySelector("svg");
    const readout = wrap.querySelector(".chart-readout");
    if (!spec || !svg) return;
    const [, , W, H] = svg.getAttribute("viewBox").split(/\s+/).map(Number);
    const all = spec.series.flatMap(function (s) { return s.points; });
    if (!all.length) return;
    const fmtX = spec.x_format === "si" ? si : function (v) { return v.toLocaleString(); };
    const xs = all.map(function (p) { return p[0]; });
    const ys = all.map(function (p) { return p[1]; });
    const x0 = 0;
    const x1 = Math.max.apply(null, xs) || 1;
    const yTicks = niceTicks(Math.min.apply(null, ys), Math.max.apply(null, ys), 6);
    const y0 = yTicks[0];
    const y1 = yTicks[yTicks.length - 1];
    const px = function (x) { return M.left + (x - x0) / (x1 - x0) * (W - M.left - M.right); };
    const py = function (y) { return H - M.bottom - (y - y0) / (y1 - y0 || 1) * (H - M.top - M.bottom); };

    svg.replaceChildren();
    const grid = svgEl("g", { class: "grid" });
    const axis = svgEl("g", { class: "axis" });
    yTicks.forEach(function (t) {
      grid.append(svgEl("line", { x1: M.left, x2: W - M.right, y1: py(t), y2: py(t) }));
      axis.append(svgEl("text", { x: M.left - 8, y: py(t) + 4, "text-anchor": "end" }, String(t)));
    });
    niceTicks(x0, x1, 6).filter(function (t) { return t <= x1; }).forEach(function (t) {
      grid.append(svgEl("line", { x1: px(t), x2: px(t), y1: M.top, y2: H - M.bottom }));
      axis.append(svgEl("text", { x: px(t), y: H - M.bottom + 18, "text-anchor": "middle" }, fmtX(t)));
    });
    axis.append(svgEl("line", { x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom }));
    axis.append(svgEl("line", { x1: M.left, x2: M.left, y1: M.top, y2: H - M.bottom }));
    axis.append(svgEl("text", { class: "axis-label", x: (M.left + W - M.right) / 2, y: H - 8, "text-anchor": "middle" }, spec.x_label));
    axis.append(svgEl("text", { class: "axis-label", transform: "rotate(-90)", x: -(M.top + H - M.bottom) / 2, y: 16,
      "text-anchor": "middle" }, spec.y_label));
    svg.append(grid, axis);
    // each label goes on the first row where it clears the labels before it, so close marks never overprint
    const rowEnds = [];
    (spec.marks || []).forEach(function (m) {
      const g = svgEl("g", { class: "mark" + (m.class ? " " + m.class : "") });
      g.append(svgEl("line", { x1: px(m.x), x2: px(m.x), y1: M.top, y2: H - M.bottom }));
      const label = svgEl("text", { x: px(m.x) + 4, y: M.top + 12 }, m.label);
      g.append(label);
      svg.append(g);
      const width = label.getComputedTextLength ? label.getComputedTextLength() : m.label.length * 7;
      let row = rowEnds.findIndex(function (end) { return end < px(m.x); });
      if (row < 0) { row = rowEnds.length; rowEnds.push(0); }
      rowEnds[row] = px(m.x) + 4 + width + 6;
      let x = px(m.x) + 4;
      if (x + width > W - M.right) {  // past the right edge: the label reads leftwards from its line
        x = px(m.x) - 4;
        label.setAttribute("text-anchor", "end");
      }
      label.setAttribute("x", x);
      label.setAttribute("y", M.top + 12 + row * 15);
    });

    spec.series.forEach(function (s) {
      const d = s.points.map(function (p, i) { return (i ? "L" : "M") + px(p[0]).toFixed(1) + " " + py(p[1]).toFixed(1); }).join("");
      svg.append(svgEl("path", { class: "series " + s.class, d: d }));
      if (s.dots) {
        const g = svgEl("g", { class: "dot-val" });
        s.points.forEach(function (p) { g.append(svgEl("circle", { cx: px(p[0]), cy: py(p[1]), r: 3.5 })); });
        svg.append(g);
      }
    });

    // hover / keyboard readout over the x values any series has
    const stops = Array.from(new Set(xs)).sort(function (a, b) { return a - b; });
    const marker = svgEl("line", { class: "hover-line", y1: M.top, y2: H - M.bottom, visibility: "hidden" });
    svg.append(marker);
    let current = -1;
    function show(i) {
      current = Math.max(0, Math.min(stops.length - 1, i));
      const x = stops[current];
      marker.setAttribute("x1", px(x));
      marker.setAttribute("x2", px(x));
      marker.setAttribute("visibility", "visible");
      const parts = spec.series.map(function (s) {
        const p = s.points.find(function (q) { return q[0] === x; });
        return p ? s.label + " " + p[1].toFixed(3) : null;
      }).filter(Boolean);
      readout.textContent = "After " + fmtX(x) + " " + spec.x_label + ": " + parts.join(" · ");
    }
    svg.setAttribute("tabindex", "0");
    svg.addEventListener("pointermove", function (evt) {
      const box = svg.getBoundingClientRect();
      const x = x0 + ((evt.clientX - box.left) / box.width * W - M.left) / (W - M.left - M.right) * (x1 - x0);
      let best = 0;
      stops.forEach(function (s, i) { if (Math.abs(s - x) < Math.abs(stops[best] - x)) best = i; });
      show(best);
    });
    svg.addEventListener("keydown", function (evt) {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[evt.key];
      if (step) { evt.preventDefault(); show(current < 0 ? 0 : current + step); }
    });
    show(stops.length - 1);
  }

  DeepDive.onLoad(function (root) {
    DeepDive.within(root, "[data-line-chart]").forEach(draw);
  });
})();
