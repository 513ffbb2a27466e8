/* Deep Dive's shared helper, loaded by base.html on every page, in <head> and
 * before htmx (so presentation mode is applied before the first paint).
 *
 * Behaviours switched on by markup alone (they also work in htmx-swapped content):
 *   <button data-present-toggle>         presentation mode: html.present, kept in
 *                                         localStorage and in the URL (?present=1)
 *   <form data-url-state>                 mirrors its named fields into the query
 *                                         string as they change (history.replaceState),
 *                                         so a prepared demo is a link. On a field:
 *                                         data-default="v" leaves it out of the URL at v;
 *                                         data-url-max="n" leaves out values longer than n
 *                                         (default 2000; long URLs break). Checkboxes
 *                                         are written as 1 / 0.
 *   <x data-url-param="p" data-url-value="v" [data-default="d"]>
 *                                         sets ?p=v when it loads (state that comes
 *                                         back in a partial, such as a page number)
 *   <input type=checkbox data-toggle-class="c" data-toggle-target="#sel">
 *                                         toggles class c on #sel (instant view options)
 *   <x data-chips data-detail="panel-id"> a token list: hovering or focusing a .chip
 *                                         shows it and its title's facts (split on " · ")
 *                                         in #panel-id; arrow keys, Home and End move
 *                                         between chips (one tab stop per list)
 *   htmx errors                           a non-2xx answer or a lost server shows a
 *                                         friendly message in the request's target
 *
 * For page scripts, window.DeepDive offers:
 *   onLoad(fn)          fn(root) for the page and for every fragment htmx swaps in
 *   within(root, sel)   root itself if it matches sel, and its descendants that do
 *   el(tag, attrs, ...children)
 *                       builds an element; strings become text nodes, never HTML
 *   setParams({k: v})   writes URL parameters (null removes one)
 *   constants           what the server shares with page scripts (app/templating.py
 *                       PAGE_CONSTANTS): the Playground's stop texts
 *
 * Content-Security-Policy forbids inline script, so every behaviour lives here
 * or in a page's static script; nothing is ever parsed from strings as HTML.
 */
(function () {
  "use strict";
  const root = document.documentElement;
  const PRESENT_KEY = "deepdive.present";
  const URL_MAX = 2000;

  /* ---------------------------------------------------------- URL */
  function setParams(params) {
    const url = new URL(window.location.href);
    for (const [k, v] of Object.entries(params)) {
      if (v === null || v === undefined) url.searchParams.delete(k);
      else url.searchParams.set(k, v);
    }
    if (url.href !== window.location.href) history.replaceState(history.state, "", url);
  }

  /* ---------------------------------------------------------- presentation mode */
  function stored() {
    try { return localStorage.getItem(PRESENT_KEY) === "1"; } catch (e) { return false; }
  }
  function store(on) {
    try { localStorage.setItem(PRESENT_KEY, on ? "1" : "0"); } catch (e) { /* private mode: URL only */ }
  }
  const fromUrl = new URLSearchParams(window.location.search).get("present");
  let present = fromUrl === null ? stored() : fromUrl === "1";
  if (fromUrl !== null) store(present);
  root.classList.toggle("present", present);

  function setPresent(on) {
    present = on;
    store(on);
    root.classList.toggle("present", on);
    setParams({ present: on ? "1" : null });
    document.querySelectorAll("[data-present-toggle]").forEach(function (b) {
      b.setAttribute("aria-pressed", String(on));
    });
  }

  /* ---------------------------------------------------------- DOM helpers */
  function el(tag, attrs) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (let i = 2; i < arguments.length; i++) {
      const c = arguments[i];
      if (c === null || c === undefined) continue;
      node.append(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return node;
  }

  // shared with the server (app/templating.py PAGE_CONSTANTS)
  const constants = JSON.parse(document.getElementById("dd-constants").textContent);

  /* ---------------------------------------------------------- load hooks */
  const loaders = [];
  function onLoad(fn) { loaders.push(fn); }
  // htmx fires htmx:load for the body once it is ready, then for each swapped fragment
  document.addEventListener("htmx:load", function (evt) {
    const node = evt.target;
    applyUrlParams(node);
    loaders.forEach(function (fn) { fn(node); });
  });

  function within(root, sel) {
    const found = root.matches && root.matches(sel) ? [root] : [];
    return root.querySelectorAll ? found.concat(Array.from(root.querySelectorAll(sel))) : found;
  }

  function applyUrlParams(node) {
    within(node, "[data-url-param]").forEach(function (e) {
      const v = e.dataset.urlValue;
      setParams({ [e.dataset.urlParam]: v === e.dataset.default ? null : v });
    });
  }

  /* ---------------------------------------------------------- forms -> URL */
  function fieldValue(f) {
    if (f.type === "checkbox") return f.checked ? "1" : "0";
    if (f.type === "radio") return f.checked ? f.value : undefined;
    return f.value;
  }
  function syncForm(form) {
    const params = {};
    for (const f of form.elements) {
      if (!f.name || f.type === "submit" || f.type === "button") continue;
      const v = fieldValue(f);
      if (v === undefined) continue;
      const max = Number(f.dataset.urlMax || URL_MAX);
      params[f.name] = (v === (f.dataset.default ?? "") || v.length > max) ? null : v;
    }
    setParams(params);
  }

  /* ---------------------------------------------------------- chips: detail panel and keys */
  function showDetail(chipEl) {
    const list = chipEl.closest("[data-chips]");
    const panel = list && list.dataset.detail && document.getElementById(list.dataset.detail);
    if (!panel) return;
    const shown = chipEl.cloneNode(true);
    shown.querySelectorAll(".tid").forEach(function (t) { t.remove(); });
    shown.removeAttribute("tabindex");
    shown.removeAttribute("title");
    shown.removeAttribute("id");
    shown.classList.remove("current");
    shown.classList.add("detail-token");
    const facts = (chipEl.getAttribute("title") || "").split(" · ").filter(Boolean);
    panel.replaceChildren(shown, el("ul", {}, ...facts.map(function (f) { return el("li", {}, f); })));
    list.querySelectorAll(".chip.current").forEach(function (c) { c.classList.remove("current"); });
    chipEl.classList.add("current");
  }

  function moveFocus(evt) {
    const keys = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1, Home: "first", End: "last" };
    const list = evt.target.closest("[data-chips]");
    if (!(evt.key in keys) || !list || !evt.target.classList.contains("chip")) return;
    const chips = Array.from(list.querySelectorAll(".chip"));
    const i = chips.indexOf(evt.target);
    const k = keys[evt.key];
    const next = chips[k === "first" ? 0 : k === "last" ? chips.length - 1 : Math.min(chips.length - 1, Math.max(0, i + k))];
    if (!next) return;
    evt.preventDefault();
    evt.target.tabIndex = -1;
    next.tabIndex = 0;
    next.focus();
  }

  /* ---------------------------------------------------------- htmx errors */
  function showError(target, text) {
    if (!target) return;
    target.replaceChildren(el("p", { class: "message error", role: "alert" }, text));
  }

  /* ---------------------------------------------------------- wiring */
  document.addEventListener("click", function (evt) {
    if (evt.target.closest("[data-present-toggle]")) setPresent(!present);
  });
  // typing: sync once the keys pause (browsers throttle bursts of history updates)
  const pending = new WeakMap();
  document.addEventListener("input", function (evt) {
    const form = evt.target.form || evt.target.closest("form");
    if (!form || !form.hasAttribute("data-url-state")) return;
    clearTimeout(pending.get(form));
    pending.set(form, setTimeout(function () { syncForm(form); }, 250));
  });
  document.addEventListener("change", function (evt) {
    const t = evt.target;
    if (t.dataset && t.dataset.toggleClass) {
      document.querySelectorAll(t.dataset.toggleTarget).forEach(function (x) {
        x.classList.toggle(t.dataset.toggleClass, t.checked);
      });
    }
    const form = t.form || (t.closest && t.closest("form"));
    if (form && form.hasAttribute("data-url-state")) syncForm(form);
  });
  document.addEventListener("mouseover", function (evt) {
    const c = evt.target.closest && evt.target.closest("[data-chips] .chip");
    if (c) showDetail(c);
  });
  document.addEventListener("focusin", function (evt) {
    if (evt.target.matches && evt.target.matches("[data-chips] .chip")) showDetail(evt.target);
  });
  document.addEventListener("keydown", moveFocus);
  document.addEventListener("htmx:responseError", function (evt) {
    const xhr = evt.detail.xhr;
    // a refusal the server words for people (429: this computer's share is in use) is shown as it is
    const said = /^text\/plain/.test(xhr.getResponseHeader("content-type") || "") ? xhr.responseText : "";
    showError(evt.detail.target, said || "The server could not answer (" + xhr.status + " " + xhr.statusText +
      "). Try a shorter text, or reload the page.");
  });
  document.addEventListener("htmx:sendError", function (evt) {
    showError(evt.detail.target, "Could not reach the Deep Dive server. Is it still running?");
  });
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-present-toggle]").forEach(function (b) {
      b.setAttribute("aria-pressed", String(present));
    });
    // keep the mode in the URL too, so the address bar is always a shareable demo
    if (present) setParams({ present: "1" });
  });

  window.DeepDive = { onLoad, within, el, setParams, constants };
})();
