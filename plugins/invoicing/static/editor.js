// The quote and invoice editor (templates/editor.html): lines and discounts built from the page's
// data, live totals from POST /api/invoicing/preview (debounced; only the latest answer counts),
// save with POST or PUT at the version read (a 409 shows what changed and overwrites nothing
// unless asked), then issue an invoice or send / accept a quote. The server's field errors
// ("lines[2].quantity") are shown next to the field they name. Requests go through crm.api,
// which carries the session's CSRF token.
"use strict";
(() => {
  const root = document.getElementById("invoicing-editor");
  if (!root) return;
  const data = JSON.parse(document.getElementById("editor-data").textContent);
  const t = JSON.parse(document.getElementById("editor-strings").textContent);
  const $ = (id) => document.getElementById(id);
  const form = $("editor-form");
  const lineBody = $("editor-lines");
  const adjustmentBody = $("editor-adjustments");
  const locale = (document.querySelector('meta[name="locale"]').content || "en").replace("_", "-");
  const doc = {id: data.id, version: data.version};
  const productTitles = new Map(Object.entries(data.products));
  let dirty = false;
  let serial = 0;

  // -- formatting ------------------------------------------------------------------------------
  const currency = () => form.elements.currency.value;
  const money = (amount, code = currency()) => {
    try { return new Intl.NumberFormat(locale, {style: "currency", currency: code}).format(amount); }
    catch (e) { return `${amount} ${code}`; }
  };
  const rate = (value) => `${new Intl.NumberFormat(locale, {maximumFractionDigits: 6}).format(value)} %`;
  // exact sum of decimal strings ("53.97"), for the lines' subtotal
  const sum = (amounts) => {
    const places = Math.max(0, ...amounts.map(a => (a.split(".")[1] || "").length));
    const total = amounts.reduce((acc, a) => {
      const [whole, fraction = ""] = a.replace("-", "").split(".");
      const units = BigInt(whole + fraction.padEnd(places, "0"));
      return acc + (a.startsWith("-") ? -units : units);
    }, 0n);
    const digits = (total < 0n ? -total : total).toString().padStart(places + 1, "0");
    const text = places ? `${digits.slice(0, -places)}.${digits.slice(-places)}` : digits;
    return total < 0n ? `-${text}` : text;
  };
  // "19,99" as typed in a comma locale is 19.99; anything else goes as typed (the server judges)
  const number = (text) => (/^-?\d+,\d+$/.test(text) ? text.replace(",", ".") : text) || null;

  const el = (tag, attrs = {}, text) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };

  // -- rows ------------------------------------------------------------------------------------
  const control = (row, name) => row.querySelector(`[data-name="${name}"]`);
  const set = (row, name, value) => { control(row, name).value = value === null || value === undefined ? "" : value; };

  function newRow(templateId, body) {
    const row = $(templateId).content.firstElementChild.cloneNode(true);
    const n = ++serial;
    row.querySelectorAll("[data-name]").forEach(c => { c.id = `${body.id}-${n}-${c.dataset.name}`; });
    body.append(row);
    return row;
  }

  function addLine(line = {}) {
    const row = newRow("line-template", lineBody);
    const picker = row.querySelector(".relation");
    if (line.product) {
      control(row, "product").value = line.product;
      picker.dataset.title = productTitles.get(String(line.product)) || "";
      row.dataset.product = line.product;
    }
    for (const name of ["description", "quantity", "unit", "unit_price", "discount_percent", "tax_rate"]) set(row, name, line[name]);
    set(row, "tax_category", line.tax_category || data.defaults.tax_category);
    if (!line.tax_category) set(row, "tax_rate", data.defaults.tax_rate);
    if (!line.unit) set(row, "unit", data.defaults.unit);
    // what the editor does not show is kept as it was
    row.extra = {discount_amount: line.discount_amount ?? null, charge_amount: line.charge_amount ?? null, note: line.note ?? null};
    pricing(row, line.unit_price === null || line.unit_price === undefined ? "auto" : "manual");
    crm.enhanceRelations(row);
    return row;
  }

  function addAdjustment(adjustment = {}) {
    const row = newRow("adjustment-template", adjustmentBody);
    set(row, "charge", String(Boolean(adjustment.charge)));
    set(row, "reason", adjustment.reason);
    const byAmount = adjustment.amount !== null && adjustment.amount !== undefined;
    set(row, "mode", byAmount ? "amount" : "percent");
    set(row, "value", byAmount ? adjustment.amount : adjustment.percent);
    set(row, "tax_category", adjustment.tax_category);
    set(row, "tax_rate", adjustment.tax_rate);
    return row;
  }

  // A product's line is priced by the server (price list, volume, gross or net) until the user
  // types a price of their own.
  function pricing(row, how) {
    row.dataset.priced = how;
    const input = control(row, "unit_price");
    input.classList.toggle("auto-price", how === "auto");
    input.title = how === "auto" ? t.auto_price : "";
  }

  async function pickProduct(row) {
    const value = control(row, "product").value;
    if (!/^\d+$/.test(value) || value === row.dataset.product) {
      if (!value) delete row.dataset.product;
      return;
    }
    row.dataset.product = value;
    const answer = await crm.api("GET", `/api/invoicing_product/${value}`);
    if (!answer.ok || row.dataset.product !== value) return;
    const product = answer.body;
    productTitles.set(value, product.name);
    set(row, "description", product.name);
    set(row, "unit", product.unit || data.defaults.unit);
    set(row, "tax_category", product.tax_category);
    set(row, "tax_rate", product.tax_rate ?? "0");
    // a first guess; the preview puts the price list's, net or gross as the document wants
    set(row, "unit_price", product.price && product.price.currency === currency() ? product.price.amount : "");
    pricing(row, "auto");
    if (!control(row, "quantity").value) set(row, "quantity", "1");
    changed();
  }

  // -- the document as the API takes it ----------------------------------------------------------
  function readLine(row) {
    const v = (name) => control(row, name).value.trim();
    const product = v("product");
    if (!product && !v("description") && !v("quantity") && !v("unit_price")) return null;  // an empty row
    return {
      product: !product ? null : /^\d+$/.test(product) ? Number(product) : product,
      description: v("description") || null, quantity: number(v("quantity")), unit: v("unit") || null,
      unit_price: product && row.dataset.priced === "auto" ? null : number(v("unit_price")),
      discount_percent: number(v("discount_percent")), tax_category: v("tax_category") || null,
      tax_rate: number(v("tax_rate")), ...row.extra,
    };
  }

  function readAdjustment(row) {
    const v = (name) => control(row, name).value.trim();
    if (!v("reason") && !v("value")) return null;
    const value = number(v("value"));
    return {charge: v("charge") === "true", reason: v("reason") || null,
            amount: v("mode") === "amount" ? value : null, percent: v("mode") === "percent" ? value : null,
            tax_category: v("tax_category") || null, tax_rate: v("tax_category") ? number(v("tax_rate")) : null};
  }

  function headerValue(input) {
    if (input.type === "checkbox") return input.checked;
    const value = input.value.trim();
    if (input.closest(".relation") || input.name === "price_list") return !value ? null : /^\d+$/.test(value) ? Number(value) : value;
    return value || null;
  }

  // The body, and the rows in the order sent (errors name them by that index).
  function collect() {
    const body = {};
    form.querySelectorAll("[data-header]").forEach(input => {
      if (input.name) body[input.name] = headerValue(input);
    });
    const lines = [...lineBody.rows].map(row => [row, readLine(row)]).filter(([, line]) => line);
    const adjustments = [...adjustmentBody.rows].map(row => [row, readAdjustment(row)]).filter(([, a]) => a);
    body.lines = lines.map(([, line]) => line);
    body.adjustments = adjustments.map(([, a]) => a);
    return {body, lineRows: lines.map(([row]) => row), adjustmentRows: adjustments.map(([row]) => row)};
  }

  // -- errors ----------------------------------------------------------------------------------
  function clearErrors() {
    root.querySelectorAll(".field-error.dynamic").forEach(node => node.remove());
    root.querySelectorAll("[data-error-for]").forEach(node => { node.hidden = true; node.textContent = ""; });
    root.querySelectorAll("[aria-invalid]").forEach(node => node.removeAttribute("aria-invalid"));
    root.querySelectorAll(".has-error").forEach(node => node.classList.remove("has-error"));
    $("editor-errors").hidden = true;
  }

  function markField(input, message) {
    const visible = input.type === "hidden" ? input.parentElement.querySelector(".relation-search") || input : input;
    const cell = visible.closest("td, .form-row");
    const slot = el("p", {class: "field-error dynamic", id: `${visible.id}-error`}, message);
    cell.append(slot);
    cell.classList.add("has-error");
    visible.setAttribute("aria-invalid", "true");
    visible.setAttribute("aria-describedby", slot.id);
  }

  // Puts each error next to its field; what has no field on the page goes to the summary.
  function showErrors(errors, lineRows, adjustmentRows) {
    const rest = [];
    for (const error of errors) {
      const field = String(error.field || "");
      const item = /^(lines|adjustments)\[(\d+)\](?:\.(\w+))?$/.exec(field);
      let input = null;
      if (item) {
        const row = (item[1] === "lines" ? lineRows : adjustmentRows)[Number(item[2])];
        const name = item[1] === "adjustments" && ["amount", "percent"].includes(item[3]) ? "value" : item[3];
        input = row && (control(row, name || "description") || control(row, item[1] === "lines" ? "description" : "reason"));
      } else if (form.elements[field] && form.elements[field].matches && form.elements[field].matches("[data-header]")) {
        input = form.elements[field];
      } else {
        const slot = root.querySelector(`[data-error-for="${CSS.escape(field)}"]`);
        if (slot) { slot.textContent = error.message; slot.hidden = false; continue; }
      }
      if (input) markField(input, error.message);
      else rest.push(error);
    }
    const box = $("editor-errors");
    box.querySelector("ul").replaceChildren(...rest.map(e => el("li", {}, e.field ? `${e.field}: ${e.message}` : e.message)));
    box.hidden = !rest.length;
  }

  const problemErrors = (body) => (body && Array.isArray(body.errors) && body.errors.length) ? body.errors
    : [{field: "", message: crm.errorText(body)}];

  // -- live totals -----------------------------------------------------------------------------
  const totals = $("editor-totals");
  let timer = null;
  let asked = 0;

  function showTotals(result, lineRows) {
    const code = result.currency;
    lineRows.forEach((row, i) => {
      const line = result.lines[i];
      row.querySelector("[data-net]").textContent = money(line.net_amount.amount, code);
      if (row.dataset.priced === "auto" && control(row, "product").value) set(row, "unit_price", line.unit_price);
    });
    const list = $("totals-list");
    const entry = (label, value, key) => {
      const wrap = el("div", {"data-total": key});
      wrap.append(el("dt", {}, label), el("dd", {class: "num"}, value));
      return wrap;
    };
    const rows = [];
    if (result.adjustments.length) {
      rows.push(entry(t.subtotal, money(sum(result.lines.map(l => l.net_amount.amount)), code), "lines"));
      for (const a of result.adjustments) {
        const label = `${a.reason}${a.percent !== null ? ` (${rate(a.percent)})` : ""}`;
        rows.push(entry(label, `${a.charge ? "+" : "−"}${money(a.amount, code)}`, a.charge ? "charge" : "discount"));
      }
    }
    rows.push(entry(t.net, money(result.net_total.amount, code), "net"));
    for (const tax of result.tax_breakdown) {
      const label = t.tax_on.replace("{rate}", rate(tax.rate)).replace("{basis}", money(tax.basis, code));
      rows.push(entry(`${label} · ${tax.category}`, money(tax.tax, code), `tax-${tax.category}-${tax.rate}`));
    }
    rows.push(entry(t.total, money(result.total.amount, code), "total"));
    list.replaceChildren(...rows);
    totals.dataset.state = "fresh";
  }

  async function preview() {
    clearTimeout(timer);
    const {body, lineRows, adjustmentRows} = collect();
    const mine = ++asked;
    if (!body.lines.length) {
      clearErrors();
      $("totals-list").replaceChildren();
      lineBody.querySelectorAll("[data-net]").forEach(cell => { cell.textContent = "—"; });
      totals.dataset.state = "empty";
      return;
    }
    totals.setAttribute("aria-busy", "true");
    const answer = await crm.api("POST", "/api/invoicing/preview", {...body, kind: data.kind});
    if (mine !== asked) return;  // a newer edit is being priced
    totals.removeAttribute("aria-busy");
    clearErrors();
    if (answer.ok) showTotals(answer.body, lineRows);
    else {
      totals.dataset.state = "stale";
      showErrors(problemErrors(answer.body), lineRows, adjustmentRows);
    }
  }

  function state(text) { $("editor-state").textContent = text; }

  function changed() {
    dirty = true;
    state(t.unsaved);
    clearTimeout(timer);
    timer = setTimeout(preview, 300);
  }

  // -- saving and the document's actions -------------------------------------------------------
  const url = (template) => template.replace("{id}", doc.id);

  function busy(on) {
    form.querySelectorAll("button").forEach(b => { b.disabled = on; });
    form.setAttribute("aria-busy", on ? "true" : "false");
  }

  async function save() {
    clearTimeout(timer);
    const {body, lineRows, adjustmentRows} = collect();
    if (doc.id) body.version = doc.version;
    busy(true);
    state(t.saving);
    const answer = await crm.api(doc.id ? "PUT" : "POST", doc.id ? `${data.api}/${doc.id}` : data.api, body);
    busy(false);
    if (answer.ok) {
      Object.assign(doc, {id: answer.body.id, version: answer.body.version});
      $("editor-conflict").hidden = true;
      dirty = false;
      state(t.saved);
      return true;
    }
    clearErrors();
    if (answer.status === 409) conflict(answer.body || {});
    else {
      showErrors(problemErrors(answer.body), lineRows, adjustmentRows);
      if (!$("editor-errors").hidden) $("editor-errors").focus();
    }
    state(t.not_saved);
    return false;
  }

  // Someone saved the document meanwhile: say what changed; reload, or save ours over it.
  function conflict(problem) {
    const box = $("editor-conflict");
    const current = problem.current || {};
    const items = (problem.changed_fields || []).map(name => {
      const label = form.querySelector(`label[for="f-${CSS.escape(name)}"]`);
      let value = current[name];
      if (value && typeof value === "object") value = "amount" in value ? money(value.amount, value.currency) : JSON.stringify(value);
      return el("li", {}, `${label ? label.textContent.trim() : name}: ${value ?? "—"}`);
    });
    const actions = el("div", {class: "actions"});
    const reload = el("button", {type: "button", class: "secondary"}, t.reload);
    reload.addEventListener("click", () => { dirty = false; window.location.reload(); });
    const overwrite = el("button", {type: "button", id: "editor-overwrite"}, t.overwrite);
    overwrite.addEventListener("click", () => { doc.version = current.version; save(); });
    actions.append(reload, overwrite);
    const list = el("ul", {class: "conflict-changes"});
    list.append(...items);
    box.replaceChildren(el("p", {}, t.conflict), ...(items.length ? [el("p", {}, t.changed), list] : []), actions);
    box.hidden = false;
    reload.focus();
  }

  // Saves what is unsaved, then POSTs the action; resolves to its answer's body, or null.
  async function act(action) {
    if ((dirty || !doc.id) && !await save()) return null;
    busy(true);
    const answer = await crm.api("POST", `${data.api}/${doc.id}/${action}`);
    busy(false);
    if (answer.ok) return answer.body;
    clearErrors();
    showErrors(problemErrors(answer.body), [], []);
    $("editor-errors").focus();
    return null;
  }

  const go = (template) => { dirty = false; window.location.replace(url(template)); };

  const issueDialog = $("issue-dialog");
  if (issueDialog) {
    $("editor-issue").addEventListener("click", () => issueDialog.showModal());
    issueDialog.addEventListener("close", async () => {
      if (issueDialog.returnValue === "issue" && await act("issue")) go(data.record);
    });
  }
  if ($("editor-send")) {  // a sent quote still changes: its editor again; an accepted one is done
    $("editor-send").addEventListener("click", async () => { if (await act("send")) go(data.edit); });
    $("editor-accept").addEventListener("click", async () => { if (await act("accept")) go(data.record); });
  }

  // -- wiring ----------------------------------------------------------------------------------
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const created = !doc.id;
    if (await save() && created) go(data.edit);  // the page of the saved draft
  });
  form.addEventListener("input", (event) => {
    const row = event.target.closest("tr.line");
    if (row && event.target.dataset.name === "unit_price") pricing(row, event.target.value.trim() ? "manual" : "auto");
    changed();
  });
  form.addEventListener("change", (event) => {
    const target = event.target;
    const row = target.closest("tr.line");
    if (row && target.dataset.name === "product") { pickProduct(row); return; }
    if (row && target.dataset.name === "tax_category" && data.zero_rate.includes(target.value)) set(row, "tax_rate", "0");
    if (target.matches("[data-reprices]")) {  // the server prices the products' lines again
      lineBody.querySelectorAll("tr.line").forEach(line => { if (control(line, "product").value) pricing(line, "auto"); });
    }
    changed();
  });
  form.addEventListener("click", (event) => {
    const row = event.target.closest("tr");
    if (event.target.closest("[data-remove]")) {
      row.remove();
      if (!lineBody.rows.length) addLine();
      changed();
    } else if (event.target.closest("[data-move]")) {
      const step = Number(event.target.closest("[data-move]").dataset.move);
      const other = step < 0 ? row.previousElementSibling : row.nextElementSibling;
      if (!other) return;
      if (step < 0) other.before(row); else other.after(row);
      event.target.closest("[data-move]").focus();
      changed();
    }
  });
  $("add-line").addEventListener("click", () => {
    const row = addLine();
    row.querySelector(".relation-search, input").focus();
  });
  $("add-adjustment").addEventListener("click", () => { control(addAdjustment(), "reason").focus(); });
  window.addEventListener("beforeunload", (event) => { if (dirty) event.preventDefault(); });

  document.addEventListener("DOMContentLoaded", () => {
    data.document.lines.forEach(line => addLine(line));
    data.document.adjustments.forEach(a => addAdjustment(a));
    if (!data.document.lines.length) addLine();
    if (data.errors.length) showErrors(data.errors, [], []);
    preview();
  });
})();
