// Telephony on every page: screen-pops of calls ringing at the signed-in user's extension
// (server-sent events from /api/telephony/live) and click-to-call on every phone number link.
"use strict";
(() => {
  if (!window.crm || !document.querySelector('meta[name="csrf-token"]')) return;  // signed-out pages

  const style = document.createElement("link");
  style.rel = "stylesheet";
  style.href = "/static/plugins/telephony/telephony.css";
  document.head.append(style);

  const box = document.createElement("div");
  box.className = "telephony-pop";
  box.setAttribute("role", "alert");
  box.dataset.testid = "screen-pop";
  box.hidden = true;
  document.body.append(box);

  const show = (call) => {
    const title = document.createElement("strong");
    title.textContent = `📞 ${call.number || "?"}`;
    const parts = [title];
    if (call.record) {
      const link = document.createElement("a");
      link.href = call.record.url;
      link.dataset.testid = "screen-pop-card";
      link.textContent = call.record.new ? `${call.record.title || ""} (new lead)` : (call.record.title || call.record.url);
      parts.push(document.createTextNode(" "), link);
    }
    const close = document.createElement("button");
    close.type = "button";
    close.className = "secondary";
    close.textContent = "×";
    close.setAttribute("aria-label", "Close");
    close.addEventListener("click", () => { box.hidden = true; });
    parts.push(close);
    box.replaceChildren(...parts);
    box.hidden = false;
  };

  if (window.EventSource) {
    const source = new EventSource("/api/telephony/live");
    source.addEventListener("ready", () => { document.documentElement.dataset.telephonyLive = "on"; });
    source.addEventListener("call", (event) => show(JSON.parse(event.data)));
  }

  // Click-to-call: a tel: link goes through the phone system when one is configured.
  document.addEventListener("click", async (event) => {
    const link = event.target.closest('a[href^="tel:"]');
    if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey) return;
    event.preventDefault();
    const answer = await crm.api("POST", "/api/telephony/calls", {number: decodeURIComponent(link.getAttribute("href").slice(4))});
    if (answer.ok && answer.body.placed) {
      box.replaceChildren(Object.assign(document.createElement("span"), {textContent: `📞 Calling ${answer.body.number}…`}));
      box.hidden = false;
      setTimeout(() => { box.hidden = true; }, 8000);
    } else if (answer.ok || answer.status === 403) {
      window.location.href = link.getAttribute("href");  // no phone system (or not allowed): the device dials
    } else {
      alert(crm.errorText(answer.body));
    }
  });
})();
