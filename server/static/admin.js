// The admin page: health, ingestion activity with live progress, failed files with retry,
// and the feedback readers gave on answers.
"use strict";

(() => {
  const {el, icon, api, fmt, relativeTime, absoluteTime, toast, every} = Enclave;
  const $ = (id) => document.getElementById(id);
  const KIND = {upload: "Upload", inbox: "Inbox scan", cli: "Command line", reindex: "Re-index",
    retry: "Retry failed"};

  function set(id, text) { $(id).textContent = text; }

  async function health() {
    let body;
    try {
      const response = await fetch("/api/v1/health");
      body = await response.json();
    } catch (_) {
      set("stat-status", "Unreachable");
      return;
    }
    const statusNode = $("stat-status");
    const ok = body.status === "ok";
    statusNode.replaceChildren(el("span", {class: `dot ${ok ? "ok" : body.status === "loading" ? "busy" : "bad"}`,
      "aria-hidden": "true"}), ok ? "Ready" : body.status === "loading" ? "Loading models" : "Failed");
    set("stat-status-sub", ok ? `retrieval: ${body.retrieval_mode}` : body.error || "");
    set("health-updated", `Updated ${new Date().toLocaleTimeString()}`);
    if (!ok) return;
    set("stat-model", body.model);
    set("stat-model-sub", modelProcess(body.model_process));
    $("stat-model-sub").title = body.model_process ? body.model_process.profile_reason : "";
    const d = body.documents;
    set("stat-docs", fmt(d.indexed));
    set("stat-docs-sub", `indexed · ${fmt(d.pending)} pending · ${fmt(d.failed)} failed`);
    set("stat-chunks", fmt(body.chunks));
    set("stat-queue", fmt(body.ingest ? body.ingest.queue : 0));
    const g = body.generation;
    set("stat-slots", `${g.active} / ${g.slots}`);
    set("stat-slots-sub", `slots in use · ${g.waiting} waiting (queue ${g.queue})`);
  }

  // The model's own process: its CPU settings, restarts and the last crash, in one line.
  function modelProcess(p) {
    if (!p) return "loaded";
    const parts = [`${p.profile} CPU settings`];
    if (p.restarts) {
      const crash = p.last_crash;
      parts.push(`${fmt(p.restarts)} restart${p.restarts === 1 ? "" : "s"}` +
        (crash ? `, last ${new Date(crash.at * 1000).toLocaleString()}: ${crash.reason}` : ""));
    } else {
      parts.push("no crash");
    }
    return parts.join(" · ");
  }

  function job(j) {
    const running = j.status === "running";
    const counts = Object.entries(j.counts || {}).map(([status, n]) =>
      el("span", {class: `badge badge-${status === "indexed" ? "indexed" : status === "failed" ? "failed" : "finished"}`,
        text: `${fmt(n)} ${status}`}));
    const progress = el("progress", {max: Math.max(j.total, 1), value: j.done,
      "aria-label": `${KIND[j.kind] || j.kind}: ${j.done} of ${j.total} files`});
    const rate = running
      ? `${j.files_per_s} files/s · ${j.chunks_per_s} chunks/s${j.eta_s !== null ? ` · ETA ${Math.ceil(j.eta_s)} s` : ""}`
      : `${fmt(j.chunks)} chunk${j.chunks === 1 ? "" : "s"}`;
    return el("li", {class: "job", dataset: {status: j.status}},
      el("div", {},
        el("div", {class: "job-title"}, KIND[j.kind] || j.kind,
          el("span", {class: `badge badge-${running ? "running" : "finished"}`, text: running ? "Running" : "Finished"})),
        el("div", {class: "job-meta", text: `${relativeTime(j.started_at)} · ${fmt(j.done)} of ${fmt(j.total)} files`,
          title: absoluteTime(j.started_at)})),
      el("div", {class: "job-right"}, el("div", {class: "counts"}, counts), el("div", {text: rate})),
      running || j.done < j.total ? progress : null);
  }

  async function jobs() {
    let list;
    try { list = (await api("/api/v1/ingest/jobs?limit=12")).jobs; } catch (_) { return 5000; }
    $("jobs").replaceChildren(...list.map(job));
    $("jobs-empty").hidden = list.length > 0;
    return list.some((j) => j.status === "running") ? 1000 : 4000;
  }

  async function failed() {
    let docs;
    try { docs = (await api("/api/v1/documents")).documents; } catch (_) { return; }
    const list = docs.filter((d) => d.status === "failed");
    const body = $("failed-body");
    body.replaceChildren(...list.map((d) => el("tr", {dataset: {id: d.id}},
      el("td", {class: "cell-main"}, el("div", {class: "doc-name", text: d.name}),
        el("div", {class: "doc-sub", text: d.path})),
      el("td", {"data-label": "Reason"}, el("div", {class: "doc-error"}, icon("alert", "icon-sm"),
        el("span", {text: d.error || "unknown error"}))),
      el("td", {class: "cell-actions"}, el("div", {class: "row-actions"},
        el("button", {class: "btn btn-sm", type: "button", "aria-label": `Retry ${d.name}`,
          onclick: () => retry(d)}, icon("retry", "icon-sm"), "Retry"))))));
    $("failed-empty").hidden = list.length > 0;
    $("retry-all").hidden = list.length < 2;
  }

  async function retry(doc) {
    try {
      await api(`/api/v1/documents/${encodeURIComponent(doc.id)}/reindex`, {method: "POST"});
      toast(`Retrying ${doc.name}`);
    } catch (exc) { toast(exc.message); }
    refresh.now();
  }

  $("retry-all").addEventListener("click", async () => {
    try {
      const body = await api("/api/v1/ingest/retry-failed", {method: "POST"});
      toast(`Retrying ${body.count} files`);
    } catch (exc) { toast(exc.message); }
    refresh.now();
  });

  async function feedback() {
    let body;
    try { body = await api("/api/v1/feedback?limit=50"); } catch (_) { return; }
    set("feedback-counts", `${fmt(body.counts.up)} helpful · ${fmt(body.counts.down)} not helpful`);
    $("feedback").replaceChildren(...body.feedback.map((f) => el("li", {class: "fb"},
      el("span", {class: `fb-rating ${f.rating}`, role: "img",
        "aria-label": f.rating === "up" ? "Helpful" : "Not helpful"}, icon(f.rating, "icon-sm")),
      el("div", {class: "fb-body"},
        el("div", {class: "fb-q", text: f.question}),
        el("div", {class: "fb-a", text: f.abstained ? `Not in the documents: ${f.answer}` : f.answer}),
        f.comment ? el("div", {class: "fb-c", text: f.comment}) : null),
      el("span", {class: "fb-time", text: relativeTime(f.created_at), title: absoluteTime(f.created_at)}))));
    $("feedback-empty").hidden = body.feedback.length > 0;
  }

  const refresh = every(4000, async () => {
    const [next] = await Promise.all([jobs(), health(), failed()]);
    return next;
  });
  every(30000, feedback);
})();
