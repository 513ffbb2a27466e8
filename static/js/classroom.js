/* Class sessions: what only the browser can do. The server renders every view (app/classroom/routes.py) and
 * htmx's SSE extension follows the session's events (app/classroom/event_routes.py): the counts and the
 * connection line swap in as they come; on "state" the teacher's panel and a phone's view ask for themselves
 * again, saying what they show (the server answers 204 while that is still it); "ended" closes the stream and
 * fetches the view that says the session is gone (a 200: the console stays clean).
 * The stream always answers 200 and stays open while the server's store (Redis) is away, its line saying
 * "Reconnecting…" (a stream that broke would put the extension's error on the console); should it break anyway,
 * EventSource or the extension opens it again. Each connection starts with the line cleared and the present
 * state, so a page that was away lands where the class is.
 *
 * This script says "Reconnecting…" when the stream breaks without a word from the server, has the teacher's
 * stepper take the step of a reveal (data-apply-steps), so its text and URL follow, and keeps a fetched panel
 * from landing while one of its controls waits for its answer.
 */
(function () {
  "use strict";

  // a line the server sent (why the class is away) says more: it stays until the stream is back and clears it
  document.addEventListener("htmx:sseError", function (e) {
    const box = e.target.querySelector("#class-connection");
    if (box && box.hidden) {
      box.textContent = "Reconnecting to the class…";
      box.hidden = false;
    }
  });

  /* After a reveal: the answer's panel (data-apply-steps: the reveal's answer, or a panel fetched by a page that
   * missed it) is handled as it is swapped in, not at htmx:load: a panel fetched on an event may replace it within
   * htmx's settle delay, and then its load never fires. The stepper takes the revealed step (a second such panel
   * finds it taken), and the reveal's figure comes into view (the teacher need not scroll for each one), once more
   * when the stepper above it has settled on the revealed step, since its answer can push the panel down. */
  let revealWaits = false;
  function showReveal() {
    const figure = document.getElementById("class-reveal");
    if (figure) figure.scrollIntoView({ block: "nearest" });
  }
  document.addEventListener("htmx:afterSwap", function (e) {
    const panel = document.getElementById("class-panel");
    if (!e.detail.target || e.detail.target.id !== "class-panel" || !panel || panel.dataset.applySteps === undefined) return;
    const field = document.getElementById("inf-steps");
    if (field && field.value !== panel.dataset.applySteps) {
      field.value = panel.dataset.applySteps;
      document.getElementById("inf-form").requestSubmit();
    }
    showReveal();
    const bars = document.getElementById("inf-bars");  // the stepper's indicator: it is in flight
    revealWaits = !!bars && bars.classList.contains("htmx-request");
  });
  document.addEventListener("htmx:afterSettle", function (e) {
    if (revealWaits && e.detail.requestConfig && e.detail.requestConfig.elt.id === "inf-form") {
      revealWaits = false;
      showReveal();
    }
  });

  // a panel fetched after an event (the one GET that swaps the panel) must not land while one of its controls
  // (they post) waits for its answer: the swap would detach the control, and the answer (which brings the fresh
  // panel itself) could no longer find its target
  document.addEventListener("htmx:beforeSwap", function (e) {
    const target = e.detail.target;
    const fetched = e.detail.requestConfig && e.detail.requestConfig.verb === "get";
    if (fetched && target && target.id === "class-panel" && target.querySelector("[hx-post].htmx-request")) {
      e.preventDefault();
    }
  });
})();
