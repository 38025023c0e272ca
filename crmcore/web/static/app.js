// crmcore's own script for every page: the API helper (session CSRF token), auto-submitting
// selects, keyboard shortcuts and the command palette (Ctrl+K or Cmd+K).
"use strict";
const crm = window.crm = {};

crm.csrf = () => document.querySelector('meta[name="csrf-token"]').content;

// fetch() against the JSON API as the signed-in user; resolves {ok, status, body}.
crm.api = async (method, url, body) => {
  const init = {method, credentials: "same-origin", headers: {"accept": "application/json"}};
  if (method !== "GET") init.headers["x-csrf-token"] = crm.csrf();
  if (body !== undefined) { init.headers["content-type"] = "application/json"; init.body = JSON.stringify(body); }
  const response = await fetch(url, init);
  let data = null;
  const text = await response.text();
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
  return {ok: response.ok, status: response.status, body: data};
};

// The server's field errors ({errors: [{field, message}]}) as "field: message" lines.
crm.errorText = (body) => {
  if (body && Array.isArray(body.errors) && body.errors.length) return body.errors.map(e => `${e.field}: ${e.message}`).join("\n");
  return (body && (body.detail || body.title)) || String(body);
};

document.addEventListener("change", (event) => {
  if (event.target.matches("select[data-autosubmit]")) event.target.form.requestSubmit();
});

// -- the command palette ---------------------------------------------------------------------
function palette() {
  const dialog = document.getElementById("palette");
  if (!dialog) return;
  const input = document.getElementById("palette-input");
  const list = document.getElementById("palette-list");
  const items = JSON.parse(document.getElementById("palette-data").textContent || "[]");
  let selected = 0;
  const shown = () => {
    const q = input.value.trim().toLowerCase();
    return items.filter(i => !q || i.label.toLowerCase().includes(q)).slice(0, 30);
  };
  const render = () => {
    const found = shown();
    list.replaceChildren(...found.map((item, index) => {
      const li = document.createElement("li");
      li.textContent = item.label;
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", index === selected ? "true" : "false");
      li.addEventListener("click", () => { window.location.href = item.url; });
      return li;
    }));
    if (input.value.trim()) {
      const li = document.createElement("li");
      li.textContent = `🔎 ${input.value.trim()}`;
      li.setAttribute("role", "option");
      li.addEventListener("click", () => { window.location.href = `/search?q=${encodeURIComponent(input.value.trim())}`; });
      list.append(li);
    }
  };
  input.addEventListener("input", () => { selected = 0; render(); });
  input.addEventListener("keydown", (event) => {
    const found = shown();
    if (event.key === "ArrowDown") { selected = Math.min(selected + 1, found.length - 1); render(); event.preventDefault(); }
    if (event.key === "ArrowUp") { selected = Math.max(selected - 1, 0); render(); event.preventDefault(); }
    if (event.key === "Enter") {
      event.preventDefault();
      if (found[selected]) window.location.href = found[selected].url;
      else if (input.value.trim()) window.location.href = `/search?q=${encodeURIComponent(input.value.trim())}`;
    }
  });
  document.addEventListener("keydown", (event) => {
    const typing = event.target.matches("input, textarea, select, [contenteditable]");
    if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "k") {
      event.preventDefault(); input.value = ""; selected = 0; render(); dialog.showModal(); input.focus();
    } else if (event.key === "/" && !typing) {
      const search = document.querySelector(".search input");
      if (search) { event.preventDefault(); search.focus(); }
    }
  });
}

document.addEventListener("DOMContentLoaded", palette);
