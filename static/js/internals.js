/* The internals page's browser-only parts. The server renders every figure of one forward pass
 * (/partials/forward, templates/partials/_forward.html, asked again when the prompt, the position or the
 * block changes): the heatmaps of all the block's heads, of which CSS shows the checked head's, read out on
 * hover by static/js/figures.js. Here: the off buttons' pressed state, and the head finder's picks.
 */
(function () {
  "use strict";
  const $ = function (id) { return document.getElementById(id); };
  const form = $("int-form");
  const prompt = $("int-prompt");
  const layerSelect = $("int-layer");

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

  // the head finder (an htmx partial): a row shows that head's heatmap, on the probe's text if it was measured
  // there; one request (the prompt's, else the block's) brings the figures for the new prompt, block and head
  function fire(node, type) { node.dispatchEvent(new Event(type, { bubbles: true })); }
  $("int-heads").addEventListener("click", function (evt) {
    const pick = evt.target.closest("[data-head-pick]");
    if (!pick) return;
    const radio = form.querySelector('input[name="head"][value="' + pick.dataset.head + '"]');
    radio.checked = true;
    layerSelect.value = pick.dataset.layer;
    const text = pick.closest("table").dataset.probeText;
    if (text && prompt.value !== text) {
      prompt.value = text;
      fire(prompt, "input");
    } else {
      fire(layerSelect, "change");
    }
    $("attn-h").scrollIntoView({ block: "start" });
  });
  // ranking by another score measures again where the table was measured
  $("int-sort").addEventListener("change", function () {
    const table = document.querySelector("#int-heads table");
    if (!table) return;
    const on = table.dataset.probeText ? "probe" : "prompt";
    htmx.trigger(document.querySelector('#int-finder [hx-vals*="' + on + '"]'), "click");
  });
})();
