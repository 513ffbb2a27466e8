/* The inference stepper's browser-only parts. The server renders the stepper
 * (app/pages/inference.py, htmx on #inf-form); here: the settings' readouts as a
 * slider moves, a new prompt dropping the steps taken after the old one, and the
 * presenter's keys (Space samples, → takes the most likely, ← undoes).
 */
(function () {
  "use strict";
  const form = document.getElementById("inf-form");
  const prompt = document.getElementById("inf-prompt");

  /* A request's action is the button that submitted the form (the submit event's submitter), and nothing
   * else. htmx adds the button it remembers as last clicked, and forgets it only when that button loses
   * focus; a key press clicks a button without focusing it (and Safari never focuses a clicked button), so
   * a setting changed afterwards would post that action again and take another step. */
  form.addEventListener("htmx:configRequest", function (evt) {
    const trigger = evt.detail.triggeringEvent;
    const by = trigger && trigger.type === "submit" ? trigger.submitter : null;
    const data = evt.detail.formData;
    data.delete("action");
    data.delete("pick");
    if (by && by.name) data.set(by.name, by.value);
  });

  form.addEventListener("input", function (evt) {
    if (evt.target === prompt) document.getElementById("inf-steps").value = ""; // steps belong to the old prompt
    Lab.showSettings(form);
  });
  document.addEventListener("keydown", function (evt) {
    const typing = evt.target.closest && evt.target.closest("input, textarea, select, [contenteditable]");
    if (evt.repeat || evt.ctrlKey || evt.metaKey || evt.altKey || typing) return;
    const button = form.querySelector('button[data-key="' + (evt.key === " " ? " " : evt.key) + '"]');
    if (!button) return;
    if (evt.key === " " && evt.target.closest && evt.target.closest("button, a, summary")) return; // Space presses those
    evt.preventDefault();
    button.click();
  });
  Lab.showSettings(form);
})();
