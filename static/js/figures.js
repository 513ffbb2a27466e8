/* Figures a teacher takes home: each figure's toolbar saves it as a PNG, drawn here in the browser, beside a link
 * to its numbers as a CSV file (app/pages/downloads.py; the partial that redraws a figure sends its link again).
 * Nothing leaves the server and nothing comes from elsewhere: no library, no request (the stylesheets are read
 * from document.styleSheets).
 *
 * Markup (loaded on every page by base.html):
 *   <div class="figure-tools">              a figure's toolbar (deepdive.css hides it while its figure is not there)
 *   <button data-figure-png="#sel"          saves the first element #sel that shows as deepdive-<title>.png; the title is
 *     [data-figure-title="..."]>            data-figure-title, else #sel's aria-label
 *   <svg data-readout="#out">               a server-drawn figure (templates/partials/_figures.html): the cell
 *                                           hovered or reached with the arrow keys is marked and described in #out
 *
 * How a PNG is made:
 *   - an <svg> figure is cloned with each element's computed fill, stroke and font written onto it as
 *     presentation attributes (the page's CSS does not travel with a standalone SVG);
 *   - an HTML figure is cloned into an SVG <foreignObject>, inside empty stand-ins for its ancestors (their
 *     tag names, ids and classes, so the page's selectors match as on the page), with the page's own CSS
 *     text in a <style> (@media rules kept only where they match the page, whose width the image lacks).
 * Either is loaded as an image from a data: URL (the Content-Security-Policy allows data: images, not
 * blob: ones), drawn at twice its size on a canvas over the figure's background, and saved with
 * canvas.toBlob through an <a download> with a blob: URL.
 */
(function () {
  "use strict";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const XHTML_NS = "http://www.w3.org/1999/xhtml";
  const SCALE = 2;
  const MAX_SIDE = 16000; // canvas pixels along one side that browsers still draw
  const PAD = 12;         // CSS pixels of margin around the figure
  const EXPORTING = "figure-exporting"; // deepdive.css: a figure's scroll boxes show all their content
  // what a standalone SVG needs of each element's computed style, as presentation attributes
  const SVG_PROPS = ["fill", "fill-opacity", "stroke", "stroke-width", "stroke-dasharray", "stroke-opacity",
    "stroke-linecap", "stroke-linejoin", "opacity", "visibility", "font-family", "font-size", "font-weight",
    "font-style", "text-anchor", "dominant-baseline", "letter-spacing"];

  /* ---------------------------------------------------------- SVG figures */
  function svgFigure(el) {
    const box = el.getBoundingClientRect();
    const w = Math.max(1, box.width);
    const h = Math.max(1, box.height);
    const clone = el.cloneNode(true);
    const from = [el, ...el.querySelectorAll("*")];
    const to = [clone, ...clone.querySelectorAll("*")];
    from.forEach(function (node, i) {
      const cs = getComputedStyle(node);
      SVG_PROPS.forEach(function (p) {
        const v = cs.getPropertyValue(p);
        if (v) to[i].setAttribute(p, v);
      });
      if (cs.display === "none") to[i].setAttribute("display", "none");
      if (/^pre/.test(cs.whiteSpace)) to[i].setAttributeNS("http://www.w3.org/XML/1998/namespace", "xml:space", "preserve");
    });
    clone.removeAttribute("style"); // a size in rem means nothing in a standalone image
    if (!clone.getAttribute("viewBox")) clone.setAttribute("viewBox", "0 0 " + w + " " + h);
    clone.setAttribute("x", PAD);
    clone.setAttribute("y", PAD);
    clone.setAttribute("width", w);
    clone.setAttribute("height", h);
    return { w: w, h: h, content: clone };
  }

  /* ---------------------------------------------------------- HTML figures */
  function rulesText(rules) {
    let text = "";
    for (const r of rules) {
      if (r instanceof CSSMediaRule) {
        if (window.matchMedia(r.media.mediaText).matches) text += rulesText(r.cssRules);
      } else if (r instanceof CSSImportRule) {
        if (r.styleSheet) text += rulesText(r.styleSheet.cssRules);
      } else {
        text += r.cssText + "\n";
      }
    }
    return text;
  }

  function pageCss() {
    let text = "";
    for (const sheet of document.styleSheets) {
      if (sheet.href && new URL(sheet.href).origin !== window.location.origin) continue;
      try {
        text += rulesText(sheet.cssRules);
      } catch (e) { /* unreadable: not one of ours */ }
    }
    return text;
  }

  // el's ancestors, the root down to its parent, as empty boxes of the same tag, id and classes around inner
  function ancestry(el, inner) {
    let node = inner;
    for (let a = el.parentElement; a; a = a.parentElement) {
      const stand = document.createElementNS(XHTML_NS, a.localName);
      if (a.id) stand.setAttribute("id", a.id);
      stand.setAttribute("class", ((a.getAttribute("class") || "") + " figure-ancestor").trim());
      stand.append(node);
      node = stand;
    }
    return node;
  }

  function htmlFigure(el) {
    // measured and cloned with its scroll boxes opened, and (a block) holding its children's margins, which
    // on the page may fall outside it and in the picture would push its content down
    const classes = getComputedStyle(el).display === "block" ? [EXPORTING, EXPORTING + "-block"] : [EXPORTING];
    el.classList.add(...classes);
    let box, clone;
    try {
      box = el.getBoundingClientRect();
      clone = el.cloneNode(true);
    } finally {
      el.classList.remove(...classes);
    }
    const w = Math.ceil(Math.max(1, box.width));
    const h = Math.ceil(Math.max(1, box.height));
    clone.querySelectorAll("script, template").forEach(function (n) { n.remove(); });
    [clone, ...clone.querySelectorAll("*")].forEach(function (n) {
      // tooltips and behaviour are no part of a picture, and a long token list's titles are most of its bytes
      for (const attr of Array.from(n.attributes)) {
        if (attr.name === "title" || attr.name.startsWith("hx-") || attr.name.startsWith("aria-")) n.removeAttribute(attr.name);
      }
    });
    const rootPx = getComputedStyle(document.documentElement).fontSize;
    const style = document.createElementNS(SVG_NS, "style");
    style.textContent = pageCss() +
      // rem is the image's root (this <svg>); the stand-ins add nothing of their own around the figure
      ":root { font-size: " + rootPx + "; }\n" +
      "html.figure-ancestor { font-size: " + rootPx + " !important; }\n" +
      ".figure-ancestor { margin: 0 !important; padding: 0 !important; border: 0 !important; " +
      "box-shadow: none !important; background: none !important; display: block !important; " +
      "position: static !important; width: auto !important; min-width: 0 !important; max-width: none !important; " +
      "height: auto !important; min-height: 0 !important; max-height: none !important; overflow: visible !important; }\n" +
      "." + EXPORTING + " { width: " + w + "px !important; max-width: none !important; margin: 0 !important; }\n";
    const fo = document.createElementNS(SVG_NS, "foreignObject");
    fo.setAttribute("x", PAD);
    fo.setAttribute("y", PAD);
    fo.setAttribute("width", w);
    fo.setAttribute("height", h);
    fo.append(ancestry(el, clone));
    const group = document.createElementNS(SVG_NS, "g");
    group.append(style, fo);
    return { w: w, h: h, content: group };
  }

  /* ---------------------------------------------------------- drawing */
  // the colour the figure sits on: its own background, or its nearest ancestor's
  function backdrop(el) {
    for (let n = el; n; n = n.parentElement) {
      const bg = getComputedStyle(n).backgroundColor;
      if (bg && bg !== "transparent" && !/rgba\(.*,\s*0\)$/.test(bg)) return bg;
    }
    return "#ffffff";
  }

  // characters XML 1.0 cannot hold (a token may be a control character or half a surrogate pair)
  const NOT_XML = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(^|[^\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

  function loadImage(url) {
    return new Promise(function (resolve, reject) {
      const img = new Image();
      img.onload = function () { resolve(img); };
      img.onerror = function () { reject(new Error("The browser could not draw this figure.")); };
      img.src = url;
    });
  }

  async function png(el) {
    const fig = el instanceof SVGSVGElement ? svgFigure(el) : htmlFigure(el);
    const W = fig.w + 2 * PAD;
    const H = fig.h + 2 * PAD;
    const scale = Math.min(SCALE, MAX_SIDE / Math.max(W, H));
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("width", Math.round(W * scale));
    svg.setAttribute("height", Math.round(H * scale));
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    svg.append(fig.content);
    const text = new XMLSerializer().serializeToString(svg).replace(NOT_XML, function (m, before) {
      return (before || "") + "\uFFFD";
    });
    const img = await loadImage("data:image/svg+xml;charset=utf-8," + encodeURIComponent(text));
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(W * scale);
    canvas.height = Math.round(H * scale);
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = backdrop(el);
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
    return new Promise(function (resolve, reject) {
      canvas.toBlob(function (blob) {
        if (blob) resolve(blob);
        else reject(new Error("The figure is too large to save as a picture."));
      }, "image/png");
    });
  }

  function fileName(title) {
    const slug = title.normalize("NFKD").toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 80);
    return "deepdive-" + (slug || "figure") + ".png";
  }

  function save(blob, name) {
    const url = URL.createObjectURL(blob);
    const a = DeepDive.el("a", { href: url, download: name, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 60000);
  }

  function say(button, text) {
    const tools = button.closest(".figure-tools") || button.parentElement;
    let status = tools.querySelector(".figure-status");
    if (!status) {
      status = DeepDive.el("span", { class: "figure-status", role: "status" });
      tools.append(status);
    }
    status.textContent = text;
  }

  // the figure a button names: the first match that shows (of a heatmap's heads, all drawn, one shows)
  function figure(selector) {
    const all = Array.from(document.querySelectorAll(selector));
    return all.find(function (el) { return el.getClientRects().length; }) || all[0] || null;
  }

  async function download(button) {
    const el = figure(button.dataset.figurePng);
    if (!el) return;
    const title = button.dataset.figureTitle || el.getAttribute("aria-label") || document.title;
    button.disabled = true;
    say(button, "");
    try {
      save(await png(el), fileName(title));
    } catch (err) {
      say(button, err.message || "The browser could not draw this figure.");
    } finally {
      button.disabled = false;
    }
  }

  /* ---------------------------------------------------------- readouts */
  // a server-drawn figure (templates/partials/_figures.html) with data-readout: the cell hovered, or reached with the
  // arrow keys once the figure has focus (the first key picks the bottom-left cell), is described in the readout.
  // A line chart's cells are elements ([data-c] with its data-say, marked "at"); a heatmap's are found by position
  // (data-grid: x0, y0 and the cell's size), its row's data-v holds their texts, and its .at square marks the cell.
  function pick(svg, r, c) {
    const row = svg.querySelector('[data-r="' + r + '"]');
    let say;
    if (svg.dataset.grid) {
      const v = row && row.dataset.v.split("|")[c];
      if (!v) return;
      const [x0, y0, size] = svg.dataset.grid.split(" ").map(Number);
      const mark = svg.querySelector(".at");
      mark.setAttribute("x", x0 + c * size);
      mark.setAttribute("y", y0 + r * size);
      mark.removeAttribute("visibility");
      const names = JSON.parse(svg.dataset.names);
      say = svg.dataset.say.replace(/\{([rcv])\}/g, function (m, k) { return k === "v" ? v : names[k][k === "r" ? r : c]; });
    } else {
      const cell = svg.querySelector('[data-r="' + r + '"][data-c="' + c + '"]');
      if (!cell) return;
      svg.querySelectorAll(".at").forEach(function (old) { old.classList.remove("at"); });
      cell.classList.add("at");
      say = cell.dataset.say;
    }
    svg.dataset.at = r + " " + c;
    const out = document.querySelector(svg.dataset.readout);
    if (out) out.textContent = say;
  }
  // a tap on a touch screen moves no pointer: it is read as it lands
  function hover(evt) {
    const svg = evt.target.closest && evt.target.closest("svg[data-readout]");
    if (!svg) return;
    if (!svg.dataset.grid) {
      const cell = evt.target.closest("[data-c]");
      if (cell) pick(svg, cell.dataset.r, cell.dataset.c);
      return;
    }
    const [x0, y0, size] = svg.dataset.grid.split(" ").map(Number);
    const p = new DOMPoint(evt.clientX, evt.clientY).matrixTransform(svg.getScreenCTM().inverse());
    const r = Math.floor((p.y - y0) / size);
    const c = Math.floor((p.x - x0) / size);
    if (svg.dataset.at !== r + " " + c) pick(svg, r, c);
  }
  document.addEventListener("pointermove", hover);
  document.addEventListener("pointerdown", hover);

  document.addEventListener("keydown", function (evt) {
    const svg = evt.target.closest && evt.target.closest("svg[data-readout]");
    const d = svg && { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] }[evt.key];
    const rows = d && svg.querySelectorAll("[data-r]");
    if (!rows || !rows.length) return;
    evt.preventDefault();
    const at = svg.dataset.at && svg.dataset.at.split(" ").map(Number);
    if (at) pick(svg, at[0] + d[0], at[1] + d[1]);
    else pick(svg, Number(rows[rows.length - 1].dataset.r), 0);
  });

  document.addEventListener("click", function (evt) {
    const button = evt.target.closest && evt.target.closest("[data-figure-png]");
    if (!button) return;
    evt.preventDefault();
    download(button);
  });
})();
