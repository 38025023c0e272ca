// The record page and the record forms: relation search boxes, inline edits (PATCH with the
// version read; a 409 shows what changed and never overwrites silently), the quick activity
// forms and the timeline's "more". Everything here enhances pages that work without it.
// A page that adds relation widgets later (a plugin's editor) enhances them with
// crm.enhanceRelations(node); a widget's hidden id input fires "change" when the record picked changes.
"use strict";
(() => {
  const root = document.getElementById("record");
  const strings = (() => {
    const node = document.getElementById("record-strings");
    try { return node ? JSON.parse(node.textContent) : {}; } catch (e) { return {}; }
  })();
  const text = (key, fallback) => strings[key] || fallback;
  const zone = root ? root.dataset.zone : (document.querySelector("[data-zone]") || {dataset: {}}).dataset.zone;

  // -- times: a wall-clock time in the user's zone as an aware ISO time --------------------------
  const pad = (n) => String(n).padStart(2, "0");
  function zoneOffset(instant, timeZone) {  // minutes east of UTC at that instant
    const parts = new Intl.DateTimeFormat("en-US", {
      timeZone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit"}).formatToParts(new Date(instant));
    const get = (type) => Number(parts.find(p => p.type === type).value);
    return (Date.UTC(get("year"), get("month") - 1, get("day"), get("hour"), get("minute"), get("second")) - instant) / 60000;
  }
  function zonedISO(local, timeZone) {
    const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?$/.exec(local || "");
    if (!m || !timeZone) return local || null;
    const [y, mo, d, h, mi, s] = m.slice(1).map(v => Number(v || 0));
    const wall = Date.UTC(y, mo - 1, d, h, mi, s);
    let offset = zoneOffset(wall, timeZone);
    offset = zoneOffset(wall - offset * 60000, timeZone);
    const sign = offset < 0 ? "-" : "+";
    const abs = Math.abs(offset);
    return `${y}-${pad(mo)}-${pad(d)}T${pad(h)}:${pad(mi)}:${pad(s)}${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
  }

  // -- relation widgets: a search box over /api/{target}?q= storing the record's id -------------
  function enhanceRelation(box) {
    if (box.dataset.enhanced) return;
    box.dataset.enhanced = "1";
    const idInput = box.querySelector("input");
    const target = box.dataset.target;
    const titleField = box.dataset.titleField;
    const label = box.dataset.targetLabel || target;
    const search = document.createElement("input");
    search.type = "search";
    search.autocomplete = "off";
    search.className = "relation-search";
    for (const name of ["aria-describedby", "aria-invalid", "aria-required", "aria-label"]) {
      if (idInput.hasAttribute(name)) search.setAttribute(name, idInput.getAttribute(name));
    }
    if (idInput.id) { search.id = idInput.id; idInput.id = `${idInput.id}-id`; }
    const list = document.createElement("datalist");
    list.id = `${search.id || "relation-" + Math.random().toString(36).slice(2)}-options`;
    search.setAttribute("list", list.id);
    const known = new Map();
    if (idInput.value && box.dataset.title) known.set(box.dataset.title, idInput.value);
    search.value = box.dataset.title || idInput.value;
    idInput.type = "hidden";
    const titleOf = (r) => {
      let value = titleField ? r[titleField] : null;
      if (target === "contact" && r.first_name) value = `${r.first_name} ${r.last_name || ""}`.trim();
      return value !== null && value !== undefined && value !== "" ? String(value) : `${label} #${r.id}`;
    };
    const resolve = () => {
      const typed = search.value.trim();
      const before = idInput.value;
      if (!typed) idInput.value = "";
      else if (known.has(typed)) idInput.value = known.get(typed);
      else if (/^#?\d+$/.test(typed)) idInput.value = typed.replace("#", "");
      else idInput.value = typed;  // not a suggestion: the server says what is wrong
      search.setCustomValidity("");
      // the suggestions may resolve the typed title after the last keystroke: say so
      if (idInput.value !== before) idInput.dispatchEvent(new Event("change", {bubbles: true}));
    };
    let timer = null;
    let asked = 0;
    const suggest = async () => {
      const typed = search.value.trim();
      if (!typed) return;
      const mine = ++asked;
      const answer = await crm.api("GET", `/api/${encodeURIComponent(target)}?q=${encodeURIComponent(typed)}&limit=10`);
      if (mine !== asked || !answer.ok || !answer.body) return;
      const items = answer.body.items || [];
      const titles = items.map(titleOf);
      list.replaceChildren(...items.map((item, i) => {
        const title = titles.filter(t => t === titles[i]).length > 1 ? `${titles[i]} (#${item.id})` : titles[i];
        known.set(title, String(item.id));
        const option = document.createElement("option");
        option.value = title;
        option.label = `#${item.id}`;
        return option;
      }));
      resolve();
    };
    search.addEventListener("input", () => {
      resolve();
      clearTimeout(timer);
      timer = setTimeout(suggest, 180);
    });
    search.addEventListener("change", resolve);
    idInput.before(search);
    box.append(list);
  }
  const enhanceRelations = (scope) => scope.querySelectorAll(".relation").forEach(enhanceRelation);
  crm.enhanceRelations = enhanceRelations;

  // -- fetching the page again, to show values as the server formats them -----------------------
  async function fetchPage(url) {
    try {
      const response = await fetch(url, {credentials: "same-origin", headers: {accept: "text/html"}});
      if (!response.ok) return null;
      return new DOMParser().parseFromString(await response.text(), "text/html");
    } catch (e) {
      return null;
    }
  }
  const pageUrl = () => `/${root.dataset.entity}/${root.dataset.id}`;
  function swap(current, fresh) {
    if (current && fresh) current.replaceWith(document.importNode(fresh, true));
  }
  function arm(scope) {
    scope.querySelectorAll(".edit-field").forEach(button => { button.hidden = false; });
  }
  function swapTimeline(doc) {
    swap(document.getElementById("timeline-items"), doc.getElementById("timeline-items"));
    const row = document.getElementById("timeline-more-row");
    const fresh = doc.getElementById("timeline-more-row");
    if (row && fresh) swap(row, fresh);
    else if (row) row.remove();
    else if (fresh) document.getElementById("timeline-items").after(document.importNode(fresh, true));
  }
  // names: the fields whose rows to replace (null: every field).
  async function refresh(names) {
    const doc = await fetchPage(pageUrl());
    if (!doc || !doc.getElementById("record")) { window.location.reload(); return; }
    root.dataset.version = doc.getElementById("record").dataset.version;
    if (names === null) {
      swap(document.getElementById("record-fields"), doc.getElementById("record-fields"));
      arm(document.getElementById("record-fields"));
    } else {
      for (const name of [...names, "updated_at"]) {
        const selector = `.field-row[data-field="${CSS.escape(name)}"]`;
        const current = document.querySelector(selector);
        swap(current, doc.querySelector(selector));
        const replaced = document.querySelector(selector);
        if (replaced) arm(replaced);
      }
    }
    swap(document.getElementById("record-title"), doc.getElementById("record-title"));
    swapTimeline(doc);
  }

  // -- inline edits --------------------------------------------------------------------------
  function readWidget(row, form) {
    const name = row.dataset.field;
    const field = form.querySelector(`[name="${CSS.escape(name)}"]`);
    switch (row.dataset.kind) {
      case "money": {
        const amount = field.value.trim();
        const currency = form.querySelector(`[name="${CSS.escape(name)}__currency"]`).value;
        return amount ? {amount, currency} : null;
      }
      case "boolean": return field.checked;
      case "multi_choice": return [...form.querySelectorAll(`[name="${CSS.escape(name)}"]:checked`)].map(box => box.value);
      case "datetime": return field.value ? zonedISO(field.value, zone) : null;
      case "relation": {
        const value = field.value.trim();
        return !value ? null : /^\d+$/.test(value) ? Number(value) : value;
      }
      case "long_text": return field.value.trim() ? field.value : null;
      default: {
        const value = field.value.trim();
        return value === "" ? null : value;
      }
    }
  }

  function button(label, kind) {
    const b = document.createElement("button");
    b.type = kind === "submit" ? "submit" : "button";
    if (kind !== "submit") b.className = "secondary";
    b.textContent = label;
    return b;
  }

  function startEdit(row) {
    if (row.querySelector("form.inline-edit")) return;
    const dd = row.querySelector("dd");
    const value = dd.querySelector(".value");
    const pencil = dd.querySelector(".edit-field");
    const template = dd.querySelector("template.editor");
    if (!template) return;
    const form = document.createElement("form");
    form.className = "inline-edit";
    form.noValidate = true;
    form.append(template.content.cloneNode(true));
    for (const control of form.querySelectorAll("input, select, textarea")) {
      const labelled = control.id && form.querySelector(`label[for="${CSS.escape(control.id)}"]`);
      if (!labelled && !control.closest("label")) control.setAttribute("aria-label", row.dataset.label);
    }
    const error = document.createElement("p");
    error.className = "field-error";
    error.setAttribute("role", "alert");
    error.hidden = true;
    const buttons = document.createElement("div");
    buttons.className = "buttons";
    const cancel = button(text("cancel", "Cancel"), "button");
    buttons.append(button(text("save", "Save"), "submit"), cancel);
    form.append(error, buttons);
    value.hidden = true;
    if (pencil) pencil.hidden = true;
    dd.append(form);
    enhanceRelations(form);
    const stop = () => {
      form.remove();
      value.hidden = false;
      if (pencil) { pencil.hidden = false; pencil.focus(); }
    };
    cancel.addEventListener("click", stop);
    form.addEventListener("keydown", (event) => { if (event.key === "Escape") { event.preventDefault(); stop(); } });
    form.addEventListener("submit", (event) => { event.preventDefault(); save(row, form, error); });
    const first = form.querySelector("input:not([type=hidden]), select, textarea");
    if (first) first.focus();
  }

  function busy(form, on) {
    form.querySelectorAll("button").forEach(b => { b.disabled = on; });
    form.setAttribute("aria-busy", on ? "true" : "false");
  }

  async function save(row, form, error, version) {
    const name = row.dataset.field;
    const body = {[name]: readWidget(row, form), version: version ?? Number(root.dataset.version)};
    busy(form, true);
    const answer = await crm.api("PATCH", `/api/${root.dataset.entity}/${root.dataset.id}`, body);
    busy(form, false);
    if (answer.ok) {
      root.dataset.version = answer.body.version;
      await refresh(version === undefined ? [name] : null);
      const fresh = document.querySelector(`.field-row[data-field="${CSS.escape(name)}"] .edit-field`);
      if (fresh) fresh.focus();
      return;
    }
    if (answer.status === 409) { await conflict(row, form, error, answer.body || {}); return; }
    const errors = (answer.body && Array.isArray(answer.body.errors)) ? answer.body.errors : [];
    const mine = errors.filter(e => e.field === name || String(e.field).startsWith(`${name}.`));
    error.textContent = mine.length ? mine.map(e => e.message).join(" ") : crm.errorText(answer.body);
    error.hidden = false;
    const id = `inline-error-${name}`;
    error.id = id;
    form.querySelectorAll("input:not([type=hidden]), select, textarea").forEach(control => {
      control.setAttribute("aria-invalid", "true");
      control.setAttribute("aria-describedby", id);
    });
  }

  // Someone else changed the record: show their changes; reload, or re-apply ours deliberately.
  async function conflict(row, form, error, problem) {
    const current = problem.current || {};
    const changed = problem.changed_fields || [];
    const doc = await fetchPage(pageUrl());
    form.querySelectorAll(".conflict").forEach(node => node.remove());
    error.hidden = true;
    const box = document.createElement("div");
    box.className = "conflict";
    box.setAttribute("role", "alert");
    const head = document.createElement("p");
    head.textContent = text("conflict", "Someone else changed this record meanwhile. Nothing was saved.");
    box.append(head);
    if (changed.length) {
      const intro = document.createElement("p");
      intro.textContent = text("changed", "Their changes:");
      const list = document.createElement("ul");
      list.className = "conflict-changes";
      for (const name of changed) {
        const fresh = doc && doc.querySelector(`.field-row[data-field="${CSS.escape(name)}"]`);
        const here = document.querySelector(`.field-row[data-field="${CSS.escape(name)}"]`);
        const label = (fresh || here) ? (fresh || here).dataset.label : name;
        let shown = fresh ? fresh.querySelector(".value").textContent.trim() : current[name];
        if (shown !== null && typeof shown === "object") shown = JSON.stringify(shown);
        const item = document.createElement("li");
        item.dataset.field = name;
        const strong = document.createElement("strong");
        strong.textContent = label;
        item.append(strong, `: ${shown === null || shown === undefined || shown === "" ? "—" : shown}`);
        list.append(item);
      }
      box.append(intro, list);
    }
    const actions = document.createElement("div");
    actions.className = "buttons";
    const reload = button(text("reload", "Reload the page"), "button");
    reload.addEventListener("click", () => window.location.reload());
    const reapply = button(text("reapply", "Apply my change anyway"), "button");
    reapply.classList.add("reapply");
    reapply.addEventListener("click", () => save(row, form, error, current.version));
    actions.append(reload, reapply);
    box.append(actions);
    form.querySelector(".buttons").before(box);
    reload.focus();
  }

  // -- the quick activity forms -------------------------------------------------------------
  async function logActivity(form) {
    const kind = form.dataset.kind;
    const subject = form.elements.subject.value.trim();
    const details = form.elements.body.value;
    const data = {kind, subject: subject || (kind === "note" ? details.trim().split("\n")[0].slice(0, 80) : "") || null,
                  body: details.trim() ? details : null, done: kind !== "task"};
    const entity = root.dataset.entity;
    const id = Number(root.dataset.id);
    if (["contact", "company", "deal"].includes(entity)) data[entity] = id;
    else { data.related_entity = entity; data.related_id = id; }
    if (kind === "task") {
      const due = form.elements.due_at.value;
      data.due_at = due ? zonedISO(due, zone) : null;
      if (root.dataset.userId) data.assignee = Number(root.dataset.userId);
    }
    form.querySelectorAll(".field-error").forEach(node => { node.hidden = true; node.textContent = ""; });
    busy(form, true);
    const answer = await crm.api("POST", "/api/activity", data);
    busy(form, false);
    if (answer.ok) {
      form.reset();
      form.closest("details").open = false;
      const doc = await fetchPage(pageUrl());
      if (doc) swapTimeline(doc);
      const added = document.querySelector(`[data-item="activity-${answer.body.id}"]`);
      if (added) added.classList.add("tl-new");
      const status = document.getElementById("quick-status");
      if (status) status.textContent = text("logged", "Added to the timeline");
      return;
    }
    const errors = (answer.body && Array.isArray(answer.body.errors)) ? answer.body.errors : [];
    const rest = [];
    for (const e of errors) {
      const field = kind === "note" && e.field === "subject" ? "body" : e.field;
      const slot = form.querySelector(`[data-error-for="${CSS.escape(field)}"]`);
      if (slot) { slot.textContent = e.message; slot.hidden = false; } else rest.push(e);
    }
    if (rest.length || !errors.length) {
      const slot = form.querySelector(".form-error");
      slot.textContent = rest.length ? rest.map(e => `${e.field}: ${e.message}`).join("\n") : crm.errorText(answer.body);
      slot.hidden = false;
    }
  }

  // -- the timeline's "more" ------------------------------------------------------------------
  async function more(link) {
    link.setAttribute("aria-busy", "true");
    const doc = await fetchPage(link.href);
    if (!doc || !doc.getElementById("timeline-items")) { window.location.href = link.href; return; }
    const list = document.getElementById("timeline-items");
    for (const item of doc.querySelectorAll("#timeline-items > li.tl-item")) list.append(document.importNode(item, true));
    const row = document.getElementById("timeline-more-row");
    const fresh = doc.getElementById("timeline-more-row");
    if (fresh) swap(row, fresh); else row.remove();
  }

  // -- wiring ---------------------------------------------------------------------------------
  document.addEventListener("click", (event) => {
    const target = event.target;
    const pencil = target.closest(".edit-field");
    if (pencil) { startEdit(pencil.closest(".field-row")); return; }
    const value = target.closest(".field-row[data-editable] .value");
    if (value && !target.closest("a")) { startEdit(value.closest(".field-row")); return; }
    const next = target.closest("#timeline-more");
    if (next) { event.preventDefault(); more(next); }
  });
  document.addEventListener("submit", (event) => {
    if (event.target.matches("form.quick-activity") && root) {
      event.preventDefault();
      logActivity(event.target);
    }
  });
  document.addEventListener("DOMContentLoaded", () => {
    enhanceRelations(document);
    arm(document);
    const summary = document.getElementById("error-summary") || document.getElementById("conflict");
    if (summary) { summary.setAttribute("tabindex", "-1"); summary.focus(); }
  });
})();
