// Shared helpers of the Enclave pages. Everything from the server or a document is put in
// the page as text (textContent, attributes), never parsed as HTML.
"use strict";

const Enclave = (() => {
  const SVG = "http" + "://www.w3.org/2000/svg"; // a namespace name, not a request

  /** An element: el("a", {class: "x", href: "/", text: "Home"}, child, ...). */
  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** An icon from the sprite in the page (decorative: hidden from screen readers). */
  function icon(name, extra = "") {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", `icon ${extra}`.trim());
    svg.setAttribute("aria-hidden", "true");
    const use = document.createElementNS(SVG, "use");
    use.setAttribute("href", `#i-${name}`);
    svg.append(use);
    return svg;
  }

  class ApiError extends Error {
    constructor(status, code, message, retryAfter) {
      super(message);
      this.status = status;
      this.code = code;
      this.retryAfter = retryAfter;
    }
  }

  async function errorFrom(response) {
    let code = "http_error";
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.error) ({code, message} = body.error);
    } catch (_) { /* not JSON */ }
    return new ApiError(response.status, code, message, response.headers.get("Retry-After"));
  }

  /** JSON from this server's API; throws ApiError with the server's message. */
  async function api(path, {method = "GET", body, signal} = {}) {
    const init = {method, signal, headers: {Accept: "application/json"}};
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (exc) {
      if (exc.name === "AbortError") throw exc;
      throw new ApiError(0, "offline", "The Enclave server cannot be reached.");
    }
    if (!response.ok) throw await errorFrom(response);
    return response.json();
  }

  function formatBytes(n) {
    if (!n) return "—";
    const units = ["B", "KB", "MB", "GB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${n >= 10 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
  }

  const number = new Intl.NumberFormat();
  const fmt = (n) => number.format(n || 0);

  function relativeTime(seconds) {
    if (!seconds) return "—";
    const diff = Date.now() / 1000 - seconds;
    if (diff < 45) return "just now";
    if (diff < 3600) return `${Math.round(diff / 60)} min ago`;
    if (diff < 86400) return `${Math.round(diff / 3600)} h ago`;
    if (diff < 7 * 86400) return `${Math.round(diff / 86400)} d ago`;
    return new Date(seconds * 1000).toLocaleDateString();
  }

  function absoluteTime(seconds) {
    return seconds ? new Date(seconds * 1000).toLocaleString() : "";
  }

  let toastTimer = null;
  function toast(message) {
    const node = document.getElementById("toast");
    node.textContent = message;
    node.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { node.hidden = true; }, 2600);
  }

  /** A modal confirmation; resolves true when confirmed. */
  function confirmAction(title, text, okLabel = "Delete") {
    const dialog = document.getElementById("confirm-dialog");
    document.getElementById("confirm-title").textContent = title;
    document.getElementById("confirm-text").textContent = text;
    document.getElementById("confirm-ok").textContent = okLabel;
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), {once: true});
      dialog.returnValue = "";
      dialog.showModal();
    });
  }

  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) {
      // Clipboard API refused (no secure context): the old way.
      const area = el("textarea", {class: "visually-hidden", "aria-hidden": "true"});
      area.value = text;
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
  }

  /** Repeat `task` every `ms` (the interval `task` returns, if any), paused while hidden. */
  function every(ms, task) {
    let timer = null;
    let latest = 0;
    const run = async () => {
      clearTimeout(timer);
      const mine = ++latest; // a run started meanwhile schedules the next one, not this one
      let next = ms;
      try { next = (await task()) || ms; } catch (_) { /* shown by the task */ }
      if (mine === latest && !document.hidden) timer = setTimeout(run, next);
    };
    document.addEventListener("visibilitychange", () => { if (!document.hidden) run(); });
    run();
    return {now: run};
  }

  // -- the sidebar on narrow screens ---------------------------------------------------------
  function setNav(open) {
    document.body.classList.toggle("nav-open", open);
    const button = document.getElementById("menu-btn");
    button.setAttribute("aria-expanded", String(open));
    if (open) document.querySelector("#sidebar a, #sidebar button")?.focus();
  }

  function initShell() {
    document.getElementById("menu-btn").addEventListener("click", () => setNav(true));
    document.getElementById("scrim").addEventListener("click", () => setNav(false));
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && document.body.classList.contains("nav-open")) {
        setNav(false);
        document.getElementById("menu-btn").focus();
      }
    });
    const status = document.getElementById("server-status");
    const [dot, label] = status.children;
    every(15000, async () => {
      try {
        const response = await fetch("/api/v1/health");
        const body = await response.json();
        if (body.status === "ok") {
          const busy = body.generation && body.generation.active > 0;
          dot.className = `dot ${busy ? "busy" : "ok"}`;
          // The document count is shown to administrators only (health details need scope admin).
          const count = body.documents ? ` · ${fmt(body.documents.indexed)} documents` : "";
          label.textContent = `${busy ? "Answering" : "Ready"}${count}`;
        } else {
          dot.className = `dot ${body.status === "loading" ? "busy" : "bad"}`;
          label.textContent = body.status === "loading" ? "Loading models…" : "Models failed to load";
          return 3000;
        }
      } catch (_) {
        dot.className = "dot bad";
        label.textContent = "Server unreachable";
      }
      return 15000;
    });
  }

  document.addEventListener("DOMContentLoaded", initShell);

  return {
    el, icon, api, ApiError, errorFrom, formatBytes, fmt, relativeTime, absoluteTime, toast,
    confirmAction, copyText, every, setNav,
  };
})();
