// The document library: list, search, status filters, drag-and-drop upload with progress,
// live indexing status, re-index and delete.
"use strict";

(() => {
  const {el, icon, api, formatBytes, fmt, relativeTime, absoluteTime, toast, confirmAction, every} = Enclave;
  const $ = (id) => document.getElementById(id);

  let documents = [];
  let filter = "all";
  let query = "";
  const uploads = new Map(); // upload key -> {row, state, documentId}
  let poller = null;

  const STATUS_LABEL = {indexed: "Indexed", pending: "Indexing", failed: "Failed"};

  function matches(doc) {
    if (filter !== "all" && doc.status !== filter) return false;
    if (!query) return true;
    const hay = `${doc.name} ${doc.title} ${doc.path} ${doc.collection}`.toLowerCase();
    return query.split(/\s+/).every((word) => hay.includes(word));
  }

  function render() {
    const counts = {all: documents.length, indexed: 0, pending: 0, failed: 0};
    for (const d of documents) counts[d.status] = (counts[d.status] || 0) + 1;
    for (const node of document.querySelectorAll("[data-count]")) {
      node.textContent = fmt(counts[node.dataset.count] || 0);
    }
    const chunks = documents.reduce((sum, d) => sum + (d.chunks || 0), 0);
    const bits = [`${fmt(counts.indexed)} indexed`];
    if (counts.pending) bits.push(`${fmt(counts.pending)} indexing`);
    if (counts.failed) bits.push(`${fmt(counts.failed)} failed`);
    $("library-summary").textContent =
      `${fmt(documents.length)} documents · ${bits.join(" · ")} · ${fmt(chunks)} passages searchable`;

    const body = $("documents-body");
    body.replaceChildren();
    const shown = documents.filter(matches);
    for (const doc of shown) body.append(row(doc));
    const empty = $("documents-empty");
    empty.hidden = shown.length > 0;
    empty.textContent = documents.length ? "No documents match." : "No documents yet. Drop files above to add them.";
  }

  // A document being read page by page (a long PDF, a scan being OCRed) shows its pages.
  function pagesText(doc) {
    return doc.pages ? `page ${fmt(doc.pages.done)} of ${fmt(doc.pages.total)}` : "";
  }

  function statusText(doc) {
    const label = STATUS_LABEL[doc.status] || doc.status;
    return doc.status === "pending" && doc.pages ? `${label} · ${pagesText(doc)}` : label;
  }

  function row(doc) {
    const title = doc.title && doc.title !== doc.name ? doc.title : null;
    const main = el("td", {class: "cell-main"},
      el("div", {class: "doc-name", text: title || doc.name}),
      el("div", {class: "doc-sub", text: title ? doc.name : doc.path, title: doc.path}));
    if (doc.status === "failed" && doc.error) {
      main.append(el("div", {class: "doc-error"}, icon("alert", "icon-sm"), el("span", {text: doc.error})));
    }
    const label = title || doc.name;
    const open = el("a", {class: "icon-btn", href: `/api/v1/documents/${encodeURIComponent(doc.id)}/file`,
      target: "_blank", rel: "noopener noreferrer", "aria-label": `Open ${label}`, title: "Open original"},
      icon("external"));
    const reindex = el("button", {class: "icon-btn", type: "button", "aria-label": `Re-index ${label}`,
      title: doc.status === "failed" ? "Retry" : "Re-index", disabled: doc.status === "pending",
      onclick: () => reindexDocument(doc)}, icon(doc.status === "failed" ? "retry" : "refresh"));
    const remove = el("button", {class: "icon-btn", type: "button", "aria-label": `Delete ${label}`,
      title: "Delete", onclick: () => deleteDocument(doc)}, icon("trash"));
    return el("tr", {dataset: {id: doc.id, status: doc.status}},
      main,
      el("td", {"data-label": "Collection", class: "inline-cell"}, el("span", {class: "collection-tag", text: doc.collection})),
      el("td", {"data-label": "Status", class: "inline-cell"},
        el("span", {class: `badge badge-${doc.status}`, text: statusText(doc)})),
      el("td", {class: "num inline-cell", "data-label": "Size", text: formatBytes(doc.size)}),
      el("td", {class: "num inline-cell", "data-label": "Chunks", text: doc.status === "indexed" ? fmt(doc.chunks) : "—"}),
      el("td", {"data-label": "Indexed", class: "inline-cell", text: relativeTime(doc.indexed_at),
        title: absoluteTime(doc.indexed_at)}),
      el("td", {class: "cell-actions"}, el("div", {class: "row-actions"}, open, reindex, remove)));
  }

  async function load() {
    try {
      documents = (await api("/api/v1/documents")).documents;
    } catch (exc) {
      $("library-summary").textContent = exc.message;
      return 5000;
    }
    render();
    updateUploads();
    const busy = documents.some((d) => d.status === "pending") ||
      [...uploads.values()].some((u) => u.state === "uploading" || u.state === "indexing");
    return busy ? 1000 : 8000;
  }

  async function reindexDocument(doc) {
    try {
      await api(`/api/v1/documents/${encodeURIComponent(doc.id)}/reindex`, {method: "POST"});
    } catch (exc) { toast(exc.message); return; }
    toast(`Re-indexing ${doc.title || doc.name}`);
    poller.now();
  }

  async function deleteDocument(doc) {
    const ok = await confirmAction("Delete document?",
      `“${doc.title || doc.name}” will be removed from every index; answers will no longer use it. ` +
      "An uploaded file is deleted; a file from the drop folder is moved to the server's trash " +
      "folder (data/trash), so it is not indexed again.");
    if (!ok) return;
    let result;
    try {
      result = await api(`/api/v1/documents/${encodeURIComponent(doc.id)}`, {method: "DELETE"});
    } catch (exc) { toast(exc.message); return; }
    toast({
      trash: "Document deleted; its file was moved to the trash folder",
      removed: "Document deleted, with its uploaded file",
    }[result.file] || "Document deleted; its file was left where it is");
    poller.now();
  }

  // -- uploads -------------------------------------------------------------------------------

  function setUpload(upload, state, text, reason) {
    upload.state = state;
    const [, status, progress] = upload.row.children;
    status.className = `upload-state ${state}`;
    status.textContent = text;
    if (state === "indexing") progress.removeAttribute("value");
    progress.hidden = state === "indexed" || state === "failed";
    upload.row.querySelector(".upload-reason")?.remove();
    if (reason) upload.row.append(el("div", {class: "upload-reason", text: reason}));
    upload.row.dataset.state = state;
  }

  function updateUploads() {
    for (const upload of uploads.values()) {
      if (upload.state !== "indexing") continue;
      const doc = documents.find((d) => d.id === upload.documentId);
      if (doc && doc.status === "pending" && doc.pages) {
        setUpload(upload, "indexing", `Indexing… ${pagesText(doc)}`);
        const progress = upload.row.children[2];
        progress.max = doc.pages.total;
        progress.value = doc.pages.done;
      }
      if (!doc || doc.status === "pending") continue;
      if (doc.status === "indexed") setUpload(upload, "indexed", `Indexed · ${fmt(doc.chunks)} passages`);
      else setUpload(upload, "failed", "Failed", doc.error);
    }
  }

  function uploadFile(file) {
    const progress = el("progress", {max: 100, value: 0, "aria-label": `Upload of ${file.name}`});
    const row = el("li", {class: "upload"},
      el("span", {class: "upload-name", text: file.name}),
      el("span", {class: "upload-state", text: "Waiting…"}), progress);
    $("uploads").prepend(row);
    const upload = {row, state: "uploading", documentId: null};
    uploads.set(Symbol(file.name), upload);

    const data = new FormData();
    data.append("file", file, file.name);
    const request = new XMLHttpRequest();
    request.open("POST", "/api/v1/documents");
    request.responseType = "json";
    request.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      const percent = Math.round((event.loaded / event.total) * 100);
      progress.value = percent;
      setUpload(upload, "uploading", `Uploading ${percent}%`);
    });
    request.addEventListener("load", () => {
      const body = request.response || {};
      if (request.status === 202) {
        upload.documentId = body.id;
        progress.value = 100;
        setUpload(upload, "indexing", "Indexing…");
        poller.now();
      } else {
        const message = body.error ? body.error.message : `upload failed (${request.status})`;
        setUpload(upload, "failed", "Not uploaded", message);
      }
    });
    request.addEventListener("error", () => setUpload(upload, "failed", "Not uploaded", "The server cannot be reached."));
    request.send(data);
    setUpload(upload, "uploading", "Uploading 0%");
  }

  function uploadAll(files) {
    for (const file of files) uploadFile(file);
  }

  const zone = $("dropzone");
  const input = $("file-input");
  $("choose-files").addEventListener("click", () => input.click());
  input.addEventListener("change", () => { uploadAll(input.files); input.value = ""; });
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => { event.preventDefault(); zone.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, () => zone.classList.remove("over"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer && event.dataTransfer.files.length) uploadAll(event.dataTransfer.files);
  });
  // A file dropped next to the zone must not make the browser leave the page to show it.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());

  // -- search and filters --------------------------------------------------------------------

  $("doc-search").addEventListener("input", (event) => {
    query = event.target.value.trim().toLowerCase();
    render();
  });
  for (const button of document.querySelectorAll("[data-filter]")) {
    button.addEventListener("click", () => {
      filter = button.dataset.filter;
      for (const b of document.querySelectorAll("[data-filter]")) {
        b.setAttribute("aria-pressed", String(b === button));
      }
      render();
    });
  }

  poller = every(8000, load);
})();
