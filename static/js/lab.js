/* Shared by the inference and playground pages: the readouts beside the sampling sliders, written as a slider
 * moves. Lab.showSettings(form) writes each setting's value into its <output data-show>; top-k 0 and top-p 1
 * read "off".
 */
(function () {
  "use strict";
  function showSettings(form) {
    form.querySelectorAll("[data-show]").forEach(function (o) {
      const v = Number(form.elements[o.dataset.show].value);
      o.textContent = o.dataset.show === "temperature" ? v.toFixed(2)
        : o.dataset.show === "top_k" ? (v === 0 ? "off" : String(v)) : (v >= 1 ? "off" : v.toFixed(2));
    });
  }

  window.Lab = { showSettings };
})();
