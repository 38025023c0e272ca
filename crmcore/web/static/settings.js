// The settings pages: confirmations, copying secrets, the stage editor (add and move rows),
// names made from labels, fields shown for the chosen type, tidying JSON. Every page works
// without it; it only makes them quicker to use.
"use strict";
(() => {
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

  // A form asking before it deletes or changes something hard to undo.
  document.addEventListener("submit", (event) => {
    const form = event.target.closest("form[data-confirm]");
    if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
  });

  // Copy a secret shown once.
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-copy]");
    if (!button) return;
    const source = button.parentElement.querySelector("[data-copy-text]");
    if (!source) return;
    const text = source.textContent.trim();
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = button.dataset.copied || "✓";
    } catch (e) {
      const range = document.createRange();
      range.selectNodeContents(source);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
    }
  });

  // -- the stage editor ----------------------------------------------------------------------
  const renumber = (tbody) => {
    $$("tr[data-stage-row]", tbody).forEach((row, index) => {
      const order = row.querySelector("input.order");
      if (order) order.value = String(index + 1);
    });
  };

  document.addEventListener("click", (event) => {
    const move = event.target.closest("[data-move]");
    if (move) {
      const row = move.closest("tr");
      const sibling = move.dataset.move === "up" ? row.previousElementSibling : row.nextElementSibling;
      if (!sibling) return;
      if (move.dataset.move === "up") sibling.before(row); else sibling.after(row);
      renumber(row.parentElement);
      move.focus();
      return;
    }
    const add = event.target.closest("[data-add-stage]");
    if (add) {
      const form = add.closest("form");
      const template = form.querySelector("template[data-stage-template]");
      const tbody = form.querySelector("table[data-stages] tbody");
      if (!template || !tbody) return;
      const used = $$("input[name^='stages-']", form).map(i => parseInt(i.name.split("-")[1], 10)).filter(n => !isNaN(n));
      const next = used.length ? Math.max(...used) + 1 : 0;
      const holder = document.createElement("tbody");
      holder.innerHTML = template.innerHTML.replaceAll("__i__", String(next));
      const row = holder.querySelector("tr");
      tbody.append(row);
      const name = row.querySelector("[data-stage-name]");
      if (name) name.focus();
    }
  });

  // -- names from labels ---------------------------------------------------------------------
  const slug = (text) => text.normalize("NFKD").replace(/[\u0300-\u036f]/g, "").toLowerCase()
    .replace(/ı/g, "i").replace(/[^a-z0-9]+/g, "_").replace(/^[^a-z]+/, "").replace(/_+$/, "").slice(0, 48);

  document.addEventListener("input", (event) => {
    const source = event.target.closest("[data-slug-source]");
    if (source) {
      const target = source.form && source.form.querySelector("[data-slug-target]");
      if (target && !target.dataset.touched) target.value = slug(source.value);
    } else if (event.target.matches("[data-slug-target]")) {
      event.target.dataset.touched = "1";
    }
  });

  // -- rows that only matter for some field types ----------------------------------------------
  const showForType = (select) => {
    const form = select.form;
    $$("[data-for-types]", form).forEach((row) => {
      row.hidden = !row.dataset.forTypes.split(" ").includes(select.value);
    });
  };
  document.addEventListener("change", (event) => {
    if (event.target.matches("select[data-field-type]")) showForType(event.target);
  });

  // -- tidy JSON -----------------------------------------------------------------------------
  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-format-json]");
    if (!button) return;
    let ok = true;
    $$("textarea[data-json]", button.form).forEach((area) => {
      area.setCustomValidity("");
      if (!area.value.trim()) return;
      try {
        area.value = JSON.stringify(JSON.parse(area.value), null, 2);
        area.removeAttribute("aria-invalid");
      } catch (e) {
        ok = false;
        area.setAttribute("aria-invalid", "true");
        area.setCustomValidity(e.message);
        area.reportValidity();
      }
    });
    if (ok) button.blur();
  });
  document.addEventListener("input", (event) => {
    if (event.target.matches("textarea[data-json]")) event.target.setCustomValidity("");
  });

  document.addEventListener("DOMContentLoaded", () => {
    $$("select[data-field-type]").forEach(showForType);
    $$("[data-slug-target]").forEach((input) => { if (input.value) input.dataset.touched = "1"; });
    const errors = document.querySelector("[data-errors]");
    if (errors) errors.focus();
  });
})();
