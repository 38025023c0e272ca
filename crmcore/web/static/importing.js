// The import page: upload (multipart to /api/imports), the mapping form from the server's
// preview, dry run and run (jobs), and the progress polled from /api/imports/{id}.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const upload = $("import-upload");
  if (!upload) return;
  const strings = JSON.parse($("import-strings").textContent);
  let current = null;  // the import: {id, entity, preview}

  const el = (tag, attrs = {}, text) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };

  const showError = (text) => {
    const box = $("import-preview-error");
    box.textContent = text || "";
    box.hidden = !text;
  };

  const fillMapping = (preview) => {
    const body = $("import-columns");
    body.replaceChildren();
    const keySelect = $("import-key");
    keySelect.replaceChildren(el("option", {value: "id"}, "id"));
    for (const f of preview.fields) keySelect.append(el("option", {value: f.name}, f.label));
    preview.headers.forEach((header, index) => {
      const select = el("select", {"data-column": header});
      select.append(el("option", {value: ""}, strings.skip));
      for (const f of [{name: "id", label: "id"}, {name: "owner_id", label: "owner_id"}, ...preview.fields]) {
        const option = el("option", {value: f.name}, f.label);
        if (preview.mapping[header] === f.name) option.selected = true;
        select.append(option);
      }
      const sample = preview.rows.map((r) => r[index] || "").filter(Boolean).slice(0, 3).join(" · ");
      const row = el("tr");
      row.append(el("td", {}, header), el("td", {class: "sample"}, sample));
      const cell = el("td");
      cell.append(select);
      row.append(cell);
      body.append(row);
    });
  };

  const describe = async (extra = "") => {
    const answer = await crm.api("GET", `/api/imports/${current.id}?preview=1${extra}`);
    if (!answer.ok) { showError(crm.errorText(answer.body)); return; }
    current = answer.body;
    if (current.preview) { showError(""); fillMapping(current.preview); } else showError(current.preview_error);
  };

  upload.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(upload);
    $("import-state").textContent = strings.uploading;
    const response = await fetch("/api/imports", {method: "POST", body: data, credentials: "same-origin",
      headers: {"x-csrf-token": crm.csrf(), "accept": "application/json"}});
    const body = await response.json().catch(() => null);
    if (!response.ok) { alert(crm.errorText(body)); return; }
    current = body;
    $("import-options").hidden = false;
    $("import-progress").hidden = true;
    if (current.preview) { showError(""); fillMapping(current.preview); } else showError(current.preview_error);
  });

  $("import-encoding").addEventListener("change", () => {
    const enc = $("import-encoding").value.trim();
    describe(enc ? `&encoding=${encodeURIComponent(enc)}` : "");
  });
  $("import-saved").addEventListener("change", () => {
    const name = $("import-saved").value;
    describe(name ? `&mapping=${encodeURIComponent(name)}` : "");
  });
  $("import-dedup").addEventListener("change", () => {
    $("import-key-label").hidden = $("import-dedup").value !== "key";
  });

  const options = () => {
    const mapping = {};
    for (const select of document.querySelectorAll("#import-columns select")) {
      mapping[select.dataset.column] = select.value || null;
    }
    const body = {mapping, on_duplicate: $("import-on-duplicate").value};
    const dedup = $("import-dedup").value;
    if (dedup === "key") body.key = $("import-key").value;
    else body.dedup = dedup === "none" ? [] : dedup.split(",");
    const enc = $("import-encoding").value.trim();
    if (enc) body.encoding = enc;
    const saveAs = $("import-save-as").value.trim();
    if (saveAs) body.save_mapping = saveAs;
    return body;
  };

  const show = (info) => {
    const total = Math.max(info.total, info.processed, 1);
    $("import-bar").value = info.status === "done" ? 100 : Math.round(100 * info.processed / total);
    for (const k of ["created", "updated", "skipped", "rejected"]) $(`import-${k}`).textContent = info[k];
    let state = strings[info.status] || info.status;
    if (info.status === "done" && info.dry_run) state = strings.dry;
    if (info.status === "failed") state = `${strings.failed} ${info.error || ""}`;
    if (info.status === "running") state = `${state} ${info.processed} / ${info.total} ${strings.rows}`;
    $("import-state").textContent = state;
    const link = $("import-errors");
    link.hidden = !info.has_errors;
    link.href = `/api/imports/${info.id}/errors`;
  };

  const poll = async () => {
    const answer = await crm.api("GET", `/api/imports/${current.id}`);
    if (!answer.ok) { $("import-state").textContent = crm.errorText(answer.body); return; }
    show(answer.body);
    if (answer.body.status === "pending" || answer.body.status === "running") setTimeout(poll, 500);
    else $("import-start").disabled = answer.body.status === "done" && !answer.body.dry_run;
  };

  const run = async (dryRun) => {
    const answer = await crm.api("POST", `/api/imports/${current.id}/run`, {...options(), dry_run: dryRun});
    if (!answer.ok) { alert(crm.errorText(answer.body)); return; }
    $("import-progress").hidden = false;
    show(answer.body);
    setTimeout(poll, 300);
  };
  $("import-dry-run").addEventListener("click", () => run(true));
  $("import-start").addEventListener("click", () => run(false));
})();
