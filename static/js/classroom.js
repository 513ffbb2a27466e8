/* Class sessions: what only the browser can do. The server renders every view
 * (app/classroom/routes.py); this script listens to the session's Server-Sent
 * Events and asks the server for a fresh view when one changes.
 *
 * On the Inference page, once #class-panel carries data-class-code (the teacher
 * leads a session): the counts follow each event, the panel is fetched again
 * when the session's state changes, and after a reveal (data-apply-steps) the
 * stepper takes the new step, so its text and URL follow.
 * On a phone (#phone[data-class-code]): the view is fetched again when the text,
 * the round, the reveal or the leaderboard changes; a closed session ends the stream,
 * and the view fetched then says so (a 200: the console stays clean).
 * The stream always answers 200: when the server's store (Redis) is away it sends an
 * "away" event with `retry:` and ends, and EventSource reconnects by itself; should the
 * browser give up anyway (a proxy's error page), this script opens it again, backing off.
 * Meanwhile a line says "Reconnecting…". The first event of each connection is the
 * present state, so a phone that was away lands where the class is.
 */
(function () {
  "use strict";
  const RETRY_MIN_MS = 1000;  // a stream the browser gave up on is opened again after this, doubling up to
  const RETRY_MAX_MS = 8000;  // this (the server's own "away" events make EventSource retry by itself)
  let source = null;
  let code = null;
  let handler = null;
  let timer = null;
  let delay = RETRY_MIN_MS;
  let reconnecting = false;
  let over = false;

  // the connection's state, in the line the page keeps above what is followed (outside what the views replace)
  function notice(text) {
    const box = document.getElementById("class-connection");
    if (box) {
      box.textContent = text || "";
      box.hidden = !text;
    }
  }

  function stop() {
    over = true;
    if (source) source.close();
    if (timer) clearTimeout(timer);
    source = timer = null;
  }

  function open() {
    timer = null;
    const mine = source = new EventSource("/class/" + encodeURIComponent(code) + "/events");
    source.onmessage = function (evt) {
      const event = JSON.parse(evt.data);
      if (event.type === "away") {  // the server's store is away; EventSource comes back after `retry:`
        reconnecting = true;
        notice("Reconnecting… " + event.message);
        return;
      }
      const again = reconnecting;
      reconnecting = false;
      delay = RETRY_MIN_MS;
      notice(null);
      if (event.type === "ended" || event.type === "refused") stop();
      handler(event, again);
    };
    source.onerror = function () {
      if (over || source !== mine) return;
      if (!reconnecting) notice("Reconnecting to the class…");
      reconnecting = true;
      if (mine.readyState === EventSource.CLOSED) {  // the browser gave up (an error status): try again later
        mine.close();
        source = null;
        timer = setTimeout(open, delay);
        delay = Math.min(delay * 2, RETRY_MAX_MS);
      }
    };
  }

  function follow(newCode, onEvent) {
    handler = onEvent;
    if (code === newCode && !over) return;
    stop();
    code = newCode;
    over = reconnecting = false;
    delay = RETRY_MIN_MS;
    notice(null);
    if (code) open();
  }

  /* ---------------------------------------------------------- the teacher */
  function teacher(panel) {
    follow(panel.dataset.classCode || null, function (event, again) {
      const current = document.getElementById("class-panel");
      if (!current || !current.dataset.classCode) return;
      if (event.type === "count" || event.type === "state") {
        const students = document.getElementById("class-students");
        const answers = document.getElementById("class-answers");
        if (students) students.textContent = String(event.students);
        if (answers && event.answers !== undefined && current.dataset.roundOpen === "1") answers.textContent = String(event.answers);
      }
      // a hello after an outage may follow changes this page missed, or bring back a panel that was away;
      // a panel fetched while a control waits for its answer is not swapped in (the htmx:beforeSwap guard below)
      const changed = event.type === "state" && (event.reason !== "hello" || again || current.dataset.classAway);
      if (changed || event.type === "ended" || event.type === "refused") {
        htmx.ajax("GET", "/class/" + encodeURIComponent(code) + "/panel", { target: "#class-panel", swap: "outerHTML" });
      }
      if (event.type === "state" && event.reason === "reveal") applySteps(event.steps);
    });
  }

  /* After a reveal: the answer's panel (data-apply-steps) is handled as it is swapped in, not at htmx:load:
   * the panel fetched on the reveal's event may replace it within htmx's settle delay, and then its load never
   * fires. The reveal's figure comes into view (the teacher need not scroll for each one), and once more when
   * the stepper above it has settled on the revealed step, since its answer can push the panel down. */
  let revealWaits = false;
  function showReveal() {
    const figure = document.getElementById("class-reveal");
    if (figure) figure.scrollIntoView({ block: "nearest" });
  }
  document.addEventListener("htmx:afterSwap", function (e) {
    const panel = document.getElementById("class-panel");
    if (!e.detail.target || e.detail.target.id !== "class-panel" || !panel || panel.dataset.applySteps === undefined) return;
    applySteps(panel.dataset.applySteps);
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

  // after a reveal the stepper takes the revealed step, from the reveal's answer or its event (whichever
  // comes first; the second finds it taken), so its text and URL follow
  function applySteps(steps) {
    const field = document.getElementById("inf-steps");
    if (steps !== undefined && field && field.value !== steps) {
      field.value = steps;
      document.getElementById("inf-form").requestSubmit();
    }
  }

  /* ---------------------------------------------------------- a phone */
  function viewKey(event) {
    return [event.round ? event.round.no : 0, event.revealed ? event.revealed.no : 0, event.text.length,
      event.leaderboard ? 1 : 0].join("/");
  }

  function phone(box) {
    follow(box.dataset.classCode, function (event) {
      const view = document.getElementById("phone-view");
      if (event.type === "state" && view && view.dataset.view === viewKey(event)) return;
      if (event.type === "state" || event.type === "ended" || event.type === "refused") {
        htmx.ajax("GET", "/class/" + encodeURIComponent(code) + "/phone", { target: "#phone", swap: "innerHTML" });
      }
    });
  }

  // a panel fetched after an event (the one GET that swaps the panel from outside it) must not land while one
  // of its controls waits for its answer: the swap would detach the control, and the answer (which brings the
  // fresh panel itself) could no longer find its target
  document.addEventListener("htmx:beforeSwap", function (e) {
    const target = e.detail.target;
    const fetched = e.detail.requestConfig && e.detail.requestConfig.verb === "get";
    if (fetched && target && target.id === "class-panel" && target.querySelector(".htmx-request")) {
      e.preventDefault();
    }
  });

  DeepDive.onLoad(function (root) {
    DeepDive.within(root, "#class-panel").forEach(teacher);
    DeepDive.within(root, "#phone[data-class-code]").forEach(phone);
  });
})();
