// The invoice and quote page's buttons: each calls the plugin's JSON API as the signed-in user
// (crm.api sends the session's CSRF token), then reloads the page or opens the document made;
// a refusal is shown as the server words it, naming the field.
"use strict";
(() => {
  const panel = document.querySelector("[data-testid=invoicing-document]");
  if (!panel) return;
  const message = panel.querySelector("[data-invoicing-message]");
  const say = (text) => { message.textContent = text; message.hidden = !text; };

  const done = (element, body) => {
    if (element.dataset.then === "invoice" && body && body.id) window.location.href = `/invoicing_invoice/${body.id}`;
    else window.location.reload();
  };

  const call = async (element, url, body) => {
    if (element.dataset.confirm && !window.confirm(element.dataset.confirm)) return;
    element.setAttribute("aria-busy", "true");
    say("");
    try {
      const answer = await crm.api("POST", url, body);
      if (answer.ok) done(element, answer.body);
      else say(crm.errorText(answer.body));
    } finally {
      element.removeAttribute("aria-busy");
    }
  };

  panel.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-invoicing-post]");
    if (button) { await call(button, button.dataset.invoicingPost); return; }
    const check = event.target.closest("button[data-invoicing-validate]");
    if (check) { await validate(check); return; }
    const render = event.target.closest("button[data-invoicing-render]");
    if (render) {  // a quote prints through the documents module: render it, then download the file
      const answer = await crm.api("POST", "/api/document-templates/invoicing.quote/render",
        {entity: "invoicing_quote", record_id: Number(render.dataset.invoicingRender), format: "pdf"});
      if (answer.ok) window.location.href = `/api/documents/${answer.body.id}`;
      else say(crm.errorText(answer.body));
    }
  });

  panel.addEventListener("submit", async (event) => {
    const form = event.target.closest("form[data-invoicing-form]");
    if (!form) return;
    event.preventDefault();
    const body = {};
    for (const [name, value] of new FormData(form)) {  // ids go as numbers; amounts stay exact strings
      if (value !== "") body[name] = form.elements[name].dataset.integer !== undefined ? Number(value) : value;
    }
    await call(form, form.dataset.invoicingForm, body);
  });

  // The EN 16931 check of both syntaxes, with the rules that failed.
  const validate = async (button) => {
    const out = panel.querySelector("[data-invoicing-validation]");
    button.setAttribute("aria-busy", "true");
    const answer = await crm.api("GET", button.dataset.invoicingValidate);
    button.removeAttribute("aria-busy");
    if (!answer.ok) { say(crm.errorText(answer.body)); return; }
    const list = document.createElement("ul");
    for (const [syntax, report] of Object.entries(answer.body)) {
      const item = document.createElement("li");
      item.dataset.syntax = syntax;
      item.className = report.ok ? "valid" : "invalid";
      const problems = [...report.xsd_errors, ...report.fatal.map(a => `${a.id} ${a.text}`)];
      item.textContent = `${syntax.toUpperCase()}: ${report.ok ? "✓ EN 16931" : "✗ " + problems.join("; ")}`;
      list.append(item);
    }
    out.replaceChildren(list);
    out.hidden = false;
  };
})();
