// The list page (templates/list.html): the filter builder's operators and inputs per field type,
// the column editor's moves, and the bulk actions through the JSON API (crm.api), with the
// server's errors shown on the rows they concern. The page works without this script, except
// for the bulk actions.
"use strict";

(() => {
  const metaNode = document.getElementById("list-meta");
  if (!metaNode) return;
  const meta = JSON.parse(metaNode.textContent);
  const labels = JSON.parse(document.getElementById("list-labels").textContent);
  const fields = Object.fromEntries(meta.fields.map(f => [f.name, f]));
  const FLASH = "crm-list-flash";
  const fill = (text, values) => text.replace(/\{(\w+)\}/g, (_, key) => values[key] ?? "");
  // [one, other] labels by the number they count ({n} in them).
  const plural = (forms, n) => fill(forms[n === 1 ? 0 : 1], {n});

  const el = (tag, attrs = {}, children = []) => {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === false || value === null || value === undefined) continue;
      if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    node.append(...children);
    return node;
  };
  const option = (value, text, selected) => el("option", {value, selected: !!selected, text});
  const opLabel = (kind, op) => ((kind === "date" || kind === "datetime") && labels.date_ops[op]) || labels.ops[op] || op;
  const inputTypes = {number: "number", date: "date", datetime: "datetime-local", relation: "number"};

  // The value inputs of one condition (the same markup as the macro value_input).
  function valueInputs(index, field, op) {
    if (!field || op === "is_null" || op === "not_null") return [];
    const name = `c${index}.value`;
    const kind = field.kind;
    if (kind === "bool") {
      return [el("select", {name, "aria-label": labels.value}, [option("true", labels.yes), option("false", labels.no)])];
    }
    if (kind === "choice" || kind === "multi" || kind === "user") {
      const choices = kind === "user" ? meta.users.map(u => [String(u.id), u.name]) : field.choices.map(c => [c, c]);
      return [el("select", {name, "aria-label": labels.value, multiple: op === "in"},
                 choices.map(([value, text]) => option(value, text)))];
    }
    if (op === "in") return [el("input", {type: "text", name, "aria-label": labels.values})];
    const attrs = {type: inputTypes[kind] || "text", name, "aria-label": labels.value};
    if (kind === "number") attrs.step = "any";
    if (kind === "relation") { attrs.min = "1"; attrs.placeholder = labels.id; }
    const inputs = [el("input", attrs)];
    if (op === "between") {
      inputs.push(el("span", {class: "and", text: labels.and}));
      inputs.push(el("input", {...attrs, name: `c${index}.value2`, "aria-label": labels.upper}));
    }
    return inputs;
  }

  // -- the filter builder ------------------------------------------------------------------
  function filterBuilder() {
    const form = document.getElementById("filter-builder");
    if (!form) return;
    const box = document.getElementById("conditions");
    const template = document.getElementById("condition-template");
    const add = document.getElementById("add-condition");
    add.hidden = false;
    // The empty condition the page adds for use without scripts: "Add condition" does that here.
    const rows = box.querySelectorAll(".condition");
    const last = rows[rows.length - 1];
    if (rows.length > 1 && !last.querySelector(".cond-field").value) last.remove();
    const showRemovers = () => box.querySelectorAll(".cond-remove").forEach(b => { b.hidden = false; });
    showRemovers();
    let next = Math.max(-1, ...[...box.querySelectorAll(".condition")].map(c => Number(c.dataset.index))) + 1;

    const refresh = (row, keepOp) => {
      const field = fields[row.querySelector(".cond-field").value];
      const opSelect = row.querySelector(".cond-op");
      const kind = field ? field.kind : "text";
      const ops = meta.operators[kind];
      const wanted = keepOp && ops.includes(opSelect.value) ? opSelect.value : ops[0];
      opSelect.replaceChildren(...ops.map(op => option(op, opLabel(kind, op), op === wanted)));
      row.querySelector(".cond-value").replaceChildren(...valueInputs(row.dataset.index, field, wanted));
    };
    box.addEventListener("change", (event) => {
      const row = event.target.closest(".condition");
      if (!row) return;
      if (event.target.matches(".cond-field")) refresh(row, false);
      else if (event.target.matches(".cond-op")) {
        const field = fields[row.querySelector(".cond-field").value];
        row.querySelector(".cond-value").replaceChildren(...valueInputs(row.dataset.index, field, event.target.value));
      }
    });
    box.addEventListener("click", (event) => {
      const remove = event.target.closest(".cond-remove");
      if (!remove) return;
      const row = remove.closest(".condition");
      const rows = box.querySelectorAll(".condition");
      if (rows.length > 1) {
        const focusNext = row.nextElementSibling || row.previousElementSibling;
        row.remove();
        focusNext.querySelector(".cond-field").focus();
      } else {
        row.querySelector(".cond-field").value = "";
        refresh(row, false);
        row.querySelector(".cond-field").focus();
      }
    });
    add.addEventListener("click", () => {
      const html = template.innerHTML.replaceAll("__i__", String(next++));
      const holder = document.createElement("div");
      holder.innerHTML = html;
      const row = holder.firstElementChild;
      box.append(row);
      showRemovers();
      row.querySelector(".cond-field").focus();
    });
  }

  // -- the column editor ---------------------------------------------------------------------
  function columnEditor() {
    const form = document.getElementById("column-editor");
    if (!form) return;
    const status = document.getElementById("column-status");
    form.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-move]");
      if (!button) return;
      event.preventDefault();
      const item = button.closest("li");
      const list = item.parentNode;
      if (button.dataset.move === "up" && item.previousElementSibling) list.insertBefore(item, item.previousElementSibling);
      else if (button.dataset.move === "down" && item.nextElementSibling) list.insertBefore(item.nextElementSibling, item);
      button.focus();
      const items = [...list.children];
      status.textContent = fill(labels.moved, {
        field: item.querySelector("label").textContent, n: items.indexOf(item) + 1, total: items.length});
    });
  }

  // -- bulk actions ----------------------------------------------------------------------------
  const zoneOffset = (ms, zone) => {
    const parts = new Intl.DateTimeFormat("en-US", {timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit",
      day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit"}).formatToParts(new Date(ms));
    const get = (type) => Number(parts.find(p => p.type === type).value);
    return Date.UTC(get("year"), get("month") - 1, get("day"), get("hour"), get("minute"), get("second")) -
      Math.floor(ms / 1000) * 1000;
  };
  // A datetime-local value read in the user's time zone, as ISO 8601 in UTC.
  const zoned = (wall, zone) => {
    const [date, time] = wall.split("T");
    const [y, m, d] = date.split("-").map(Number);
    const [h, mi] = time.split(":").map(Number);
    const local = Date.UTC(y, m - 1, d, h, mi);
    let guess = local;
    for (let i = 0; i < 2; i++) guess = local - zoneOffset(guess, zone);
    return new Date(guess).toISOString();
  };

  function bulkInput(field) {
    const attrs = {id: "bulk-value"};
    const kind = field.kind;
    if (kind === "bool") return el("select", attrs, [option("true", labels.yes), option("false", labels.no), option("", "—")]);
    if (kind === "choice" || kind === "user") {
      const choices = kind === "user" ? meta.users.map(u => [String(u.id), u.name]) : field.choices.map(c => [c, c]);
      return el("select", attrs, [option("", "—"), ...choices.map(([value, text]) => option(value, text))]);
    }
    if (kind === "multi") return el("select", {...attrs, multiple: true}, field.choices.map(c => option(c, c)));
    if (kind === "tags") return el("input", {...attrs, type: "text", placeholder: labels.values});
    const input = el("input", {...attrs, type: inputTypes[kind] || "text"});
    if (kind === "number") input.step = "any";
    if (kind === "relation") { input.min = "1"; input.placeholder = labels.id; }
    return input;
  }

  function bulkValue(field, input) {
    if (field.kind === "multi") return [...input.selectedOptions].map(o => o.value);
    const raw = input.value.trim();
    if (raw === "") return null;
    if (field.type === "money") return {amount: raw, currency: meta.currency};
    if (field.kind === "bool") return raw === "true";
    if (field.kind === "user" || field.kind === "relation") return Number(raw);
    if (field.kind === "datetime") return zoned(raw, meta.zone);
    return raw;
  }

  function bulk() {
    const section = document.getElementById("bulk");
    const table = document.getElementById("records");
    if (!section || !table) return;
    section.hidden = false;
    const all = document.getElementById("select-all");
    const count = document.getElementById("bulk-count");
    const status = document.getElementById("bulk-status");
    const buttons = section.querySelectorAll("button[data-bulk]");
    const boxes = () => [...table.querySelectorAll(".row-select")];
    const selected = () => boxes().filter(b => b.checked).map(b => {
      const row = b.closest("tr");
      return {id: Number(row.dataset.id), version: Number(row.dataset.version), row};
    });
    const update = () => {
      const n = selected().length;
      const total = boxes().length;
      count.textContent = n ? plural(labels.selected, n) : labels.none;
      buttons.forEach(b => { b.disabled = n === 0; });
      if (all) { all.checked = n > 0 && n === total; all.indeterminate = n > 0 && n < total; }
      table.querySelectorAll("tbody tr[data-id]").forEach(row => {
        row.classList.toggle("selected", row.querySelector(".row-select").checked);
      });
    };
    table.addEventListener("change", (event) => {
      if (event.target === all) boxes().forEach(b => { b.checked = all.checked; });
      update();
    });
    update();

    const columns = table.querySelector("thead tr").children.length;
    const clearErrors = () => table.querySelectorAll("tr.row-error").forEach(r => r.remove());
    const rowError = (row, text) => {
      let line = row.nextElementSibling;
      if (!line || !line.classList.contains("row-error")) {
        line = el("tr", {class: "row-error"}, [el("td", {colspan: columns, role: "alert"})]);
        row.after(line);
      }
      const cell = line.firstElementChild;
      cell.textContent = cell.textContent ? `${cell.textContent}; ${text}` : text;
      row.classList.add("has-error");
    };
    const done = (text) => { sessionStorage.setItem(FLASH, text); window.location.reload(); };
    const busy = (on) => { buttons.forEach(b => { b.disabled = on || selected().length === 0; }); if (on) status.textContent = labels.working; };
    const fieldLabel = (name) => (fields[name] && fields[name].label) || name;

    // One PATCH /api/{entity}/bulk for the selected rows (all or nothing); errors name the rows.
    async function patch(changes) {
      const rows = selected();
      if (!rows.length) return;
      clearErrors();
      busy(true);
      const body = rows.map(r => ({id: r.id, version: r.version, ...changes}));
      const answer = await crm.api("PATCH", `/api/${meta.entity}/bulk`, body);
      busy(false);
      if (answer.ok) return done(plural(labels.updated, rows.length));
      const errors = (answer.body && answer.body.errors) || [];
      const general = [];
      let failed = 0;
      for (const error of errors) {
        const match = /^rows\[(\d+)\]\.?(.*)$/.exec(error.field || "");
        if (match && rows[Number(match[1])]) {
          rowError(rows[Number(match[1])].row, match[2] && match[2] !== "id" ? `${fieldLabel(match[2])}: ${error.message}` : error.message);
          failed++;
        } else general.push(error.field ? `${fieldLabel(error.field)}: ${error.message}` : error.message);
      }
      status.textContent = [failed ? plural(labels.failed, failed) : "",
        general.length ? general.join("; ") : (!failed ? crm.errorText(answer.body) : "")].filter(Boolean).join(" ");
    }

    const owner = document.getElementById("bulk-owner");
    section.querySelector("button[data-bulk=assign]")?.addEventListener("click", () => patch({owner_id: Number(owner.value)}));

    const fieldSelect = document.getElementById("bulk-field");
    if (fieldSelect) {
      const slot = document.getElementById("bulk-value-slot");
      const swap = () => slot.replaceChildren(bulkInput(fields[fieldSelect.value]));
      fieldSelect.addEventListener("change", swap);
      swap();
      section.querySelector("button[data-bulk=set]").addEventListener("click", () => {
        const field = fields[fieldSelect.value];
        patch({[field.name]: bulkValue(field, document.getElementById("bulk-value"))});
      });
    }

    const dialog = document.getElementById("bulk-confirm");
    const text = document.getElementById("bulk-confirm-text");
    section.querySelector("button[data-bulk=delete]")?.addEventListener("click", () => {
      text.textContent = fill(text.dataset.template, {n: selected().length});
      dialog.showModal();
      document.getElementById("bulk-confirm-no").focus();
    });
    document.getElementById("bulk-confirm-no")?.addEventListener("click", () => dialog.close());
    document.getElementById("bulk-confirm-yes")?.addEventListener("click", async () => {
      dialog.close();
      const rows = selected();
      clearErrors();
      busy(true);
      let deleted = 0;
      const failures = [];
      for (const r of rows) {  // one by one: each record's own permission and version
        const answer = await crm.api("DELETE", `/api/${meta.entity}/${r.id}?version=${r.version}`);
        if (answer.ok) { deleted++; r.row.remove(); } else failures.push([r, answer.body]);
      }
      busy(false);
      if (!failures.length) return done(plural(labels.deleted, deleted));
      for (const [r, body] of failures) rowError(r.row, crm.errorText(body));
      status.textContent = `${plural(labels.deleted, deleted)} ${plural(labels.failed, failures.length)}`;
      update();
    });
  }

  function flash() {
    const text = sessionStorage.getItem(FLASH);
    const node = document.getElementById("list-flash");
    if (!text || !node) return;
    sessionStorage.removeItem(FLASH);
    node.textContent = text;
    node.hidden = false;
  }

  const start = () => { filterBuilder(); columnEditor(); bulk(); flash(); };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
