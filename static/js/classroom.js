/* Class sessions: what only the browser can do. The server renders every view
 * (app/classroom/routes.py); this script listens to the session's Server-Sent
 * Events and asks the server for a fresh view when one changes.
 *
 * On the Inference page, once #class-panel carries data-class-code (the teacher
 * leads a session): the counts follow each event, the panel is fetched again
 * when the session's state changes, and after a reveal (data-apply-steps) the
 * stepper takes the new step, so its text and URL follow.
 * On a phone (#phone[data-class-code]): the view is fetched again when the text,
 * the round, the reveal or the leaderboard changes; a closed session ends the stream.
 * EventSource reconnects by itself; the first event of each connection is the
 * present state, so a phone that was away lands where the class is.
 */
(function () {
  "use strict";
  let source = null;
  let code = null;

  function follow(newCode, onEvent) {
    if (code === newCode) return;
    if (source) source.close();
    code = newCode;
    source = newCode ? new EventSource("/class/" + encodeURIComponent(newCode) + "/events") : null;
    if (source) {
      source.onmessage = function (evt) {
        const event = JSON.parse(evt.data);
        if (event.type === "ended") { source.close(); source = null; }
        onEvent(event);
      };
    }
  }

  /* ---------------------------------------------------------- the teacher */
  function teacher(panel) {
    follow(panel.dataset.classCode || null, function (event) {
      const current = document.getElementById("class-panel");
      if (!current || !current.dataset.classCode) return;
      if (event.type === "count" || event.type === "state") {
        const students = document.getElementById("class-students");
        const answers = document.getElementById("class-answers");
        if (students) students.textContent = String(event.students);
        if (answers && event.answers !== undefined && current.dataset.roundOpen === "1") answers.textContent = String(event.answers);
      }
      // a control's own answer brings the fresh panel; fetching one meanwhile would detach the control
      // before its answer lands
      const inFlight = current.querySelector(".htmx-request");
      if (((event.type === "state" && event.reason !== "hello") || event.type === "ended") && !inFlight) {
        htmx.ajax("GET", "/class/" + encodeURIComponent(code) + "/panel", { target: "#class-panel", swap: "outerHTML" });
      }
      if (event.type === "state" && event.reason === "reveal") applySteps(event.steps);
    });
    applySteps(panel.dataset.applySteps);
  }

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
      if (event.type === "state" || event.type === "ended") {
        htmx.ajax("GET", "/class/" + encodeURIComponent(code) + "/phone", { target: "#phone", swap: "innerHTML" });
      }
    });
  }

  DeepDive.onLoad(function (root) {
    DeepDive.within(root, "#class-panel").forEach(teacher);
    DeepDive.within(root, "#phone[data-class-code]").forEach(phone);
  });
})();
