// The kanban board (board.html): move cards between stages by drag and drop, by keyboard
// (arrow keys + Enter on a focused card) or with a card's "Move to" list; ask for the lost
// reason before a lost stage; load a column's next page. Every move is a PATCH of the record's
// stage through the JSON API (the records service: permissions, audit, stage history,
// automation), with the version the page read, so a stale card gets 409 rather than
// overwriting someone else's change.
"use strict";
(() => {
  const board = document.querySelector("[data-board]");
  if (!board) return;
  const data = JSON.parse(document.getElementById("board-data").textContent);
  const text = JSON.parse(document.getElementById("board-text").textContent);
  const locale = ((document.querySelector('meta[name="locale"]') || {}).content || "en").replace("_", "-");
  const errorBox = document.getElementById("board-error");
  const status = document.getElementById("board-status");
  const template = document.getElementById("card-template");
  const users = new Map(Object.entries(data.users).map(([id, name]) => [Number(id), name]));
  const stages = data.stages.map((s) => s.name);
  const kinds = new Map(data.stages.map((s) => [s.name, s.kind]));

  const say = (pattern, values) => pattern.replace(/\{(\w+)\}/g, (_, key) => (key in values ? values[key] : ""));
  const column = (stage) => board.querySelector(`.column[data-stage="${CSS.escape(stage)}"]`);
  const listOf = (stage) => column(stage).querySelector(".cards");
  const stageLabel = (stage) => (column(stage) ? column(stage).dataset.label : stage);
  const cardTitle = (card) => card.querySelector(".card-title").textContent.trim();
  const number = (n) => { try { return new Intl.NumberFormat(locale).format(n); } catch (e) { return String(n); } };

  const announce = (message) => { status.textContent = message; };
  const showError = (message) => { errorBox.textContent = message; errorBox.hidden = false; };
  const clearError = () => { errorBox.hidden = true; errorBox.textContent = ""; };

  // -- counts and sums ---------------------------------------------------------------------
  const adjustCount = (stage, delta) => {
    const section = column(stage);
    const count = section && section.querySelector("[data-count]");
    if (!count) return;
    const value = Math.max(0, Number(count.dataset.count) + delta);
    count.dataset.count = String(value);
    count.textContent = number(value);
  };

  // The columns' totals as the server counts them (every record, formatted for the user).
  const refreshTotals = async () => {
    const answer = await crm.api("GET", data.totals_url);
    if (!answer.ok || !answer.body) return;
    for (const stage of answer.body.stages) {
      const section = column(stage.name);
      if (!section) continue;
      const count = section.querySelector("[data-count]");
      count.dataset.count = String(stage.count);
      count.textContent = stage.count_text;
      const sums = section.querySelector("[data-amounts]");
      if (!sums) continue;
      if (stage.amounts === null) {
        const dash = document.createElement("span");
        dash.className = "muted";
        dash.textContent = "—";
        sums.replaceChildren(dash);
      } else {
        sums.replaceChildren(...stage.amounts.map((value) => {
          const span = document.createElement("span");
          span.textContent = value;
          return span;
        }));
      }
    }
  };

  // -- the lost reason ---------------------------------------------------------------------
  const askLostReason = (card) => new Promise((resolve) => {
    const dialog = document.getElementById("lost-dialog");
    const input = document.getElementById("lost-reason");
    document.getElementById("lost-what").textContent = cardTitle(card);
    input.value = "";
    dialog.returnValue = "";
    const closed = () => {
      dialog.removeEventListener("close", closed);
      resolve(dialog.returnValue === "confirm" ? input.value.trim() : null);
    };
    dialog.addEventListener("close", closed);
    dialog.showModal();
    input.focus();
  });
  const cancel = document.getElementById("lost-cancel");
  if (cancel) cancel.addEventListener("click", () => document.getElementById("lost-dialog").close("cancel"));

  // -- moving a card -----------------------------------------------------------------------
  const place = (card, stage, focus) => {
    listOf(stage).prepend(card);
    if (focus) card.focus();
  };
  const putBack = (card, origin, focus) => {
    if (origin.next && origin.next.parentElement === origin.list) origin.list.insertBefore(card, origin.next);
    else origin.list.append(card);
    if (focus) card.focus();
  };
  const setVersion = (card, version) => {
    card.dataset.version = String(version);
    const field = card.querySelector('.move input[name="version"]');
    if (field) field.value = String(version);
  };
  const setStage = (card, stage) => {
    card.dataset.stage = stage;
    const select = card.querySelector('.move select[name="stage"]');
    if (select) select.value = stage;
  };

  let busy = false;
  const move = async (card, stage, {focus = false} = {}) => {
    const from = card.dataset.stage;
    if (busy || !stage || stage === from || !column(stage)) return;
    busy = true;
    card.classList.remove("moved");  // set again once this move is saved
    clearError();  // a message of an earlier move is stale now
    const origin = {list: card.parentElement, next: card.nextElementSibling};
    try {
      place(card, stage, focus);
      const body = {stage, version: Number(card.dataset.version)};
      if (kinds.get(stage) === "lost" && data.lost_reason) {
        const reason = await askLostReason(card);
        if (reason === null) {
          putBack(card, origin, true);
          setStage(card, from);
          announce(say(text.cancelled, {title: cardTitle(card)}));
          return;
        }
        body.lost_reason = reason;
      }
      card.classList.add("moving");
      card.setAttribute("aria-busy", "true");
      adjustCount(from, -1);
      adjustCount(stage, +1);
      const answer = await crm.api("PATCH", `/api/${encodeURIComponent(data.entity)}/${card.dataset.id}`, body);
      card.classList.remove("moving");
      card.removeAttribute("aria-busy");
      if (answer.ok) {
        clearError();
        setVersion(card, answer.body.version);
        setStage(card, answer.body.stage || stage);
        if (answer.body.stage && answer.body.stage !== stage && column(answer.body.stage)) place(card, answer.body.stage, focus);
        card.classList.remove("moved");
        void card.offsetWidth;  // restart the highlight
        card.classList.add("moved");
        announce(say(text.moved, {title: cardTitle(card), stage: stageLabel(card.dataset.stage)}));
      } else {
        adjustCount(stage, -1);
        adjustCount(from, +1);
        const current = answer.status === 409 && answer.body && answer.body.current;
        if (current && current.version) setVersion(card, current.version);
        if (current && current.stage && current.stage !== from && column(current.stage)) {
          place(card, current.stage, focus);  // someone else moved it: show where it is now
          setStage(card, current.stage);
        } else {
          putBack(card, origin, focus);
          setStage(card, from);
        }
        showError(say(text.failed, {title: cardTitle(card)}) + " " + crm.errorText(answer.body));
        announce(say(text.failed, {title: cardTitle(card)}));
      }
      refreshTotals();
    } finally {
      busy = false;
    }
  };

  // Drag and drop (HTML5).
  let dragged = null;
  const clearTargets = () => board.querySelectorAll(".column.drop-target").forEach((c) => c.classList.remove("drop-target"));
  board.addEventListener("dragstart", (event) => {
    const card = event.target.closest && event.target.closest(".card[data-movable]");
    if (!card || busy) return;
    dragged = card;
    card.classList.add("dragging");
    event.dataTransfer.effectAllowed = "move";
    event.dataTransfer.setData("text/plain", card.dataset.id);
  });
  board.addEventListener("dragend", () => {
    if (dragged) dragged.classList.remove("dragging");
    dragged = null;
    clearTargets();
  });
  board.addEventListener("dragover", (event) => {
    const section = dragged && event.target.closest && event.target.closest(".column");
    if (!section) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "move";
    if (!section.classList.contains("drop-target")) { clearTargets(); section.classList.add("drop-target"); }
  });
  board.addEventListener("drop", (event) => {
    const section = dragged && event.target.closest && event.target.closest(".column");
    if (!section) return;
    event.preventDefault();
    const card = dragged;
    dragged.classList.remove("dragging");
    dragged = null;
    clearTargets();
    move(card, section.dataset.stage);
  });

  // The keyboard: arrows choose a column, Enter moves there, Escape cancels; up and down go
  // from card to card.
  const clearPending = (card) => {
    delete card.dataset.pending;
    card.classList.remove("pending");
    clearTargets();
  };
  board.addEventListener("keydown", (event) => {
    const card = event.target;
    if (!card.matches || !card.matches(".card[data-movable]")) return;
    const rtl = document.documentElement.dir === "rtl";
    if (event.key === "ArrowLeft" || event.key === "ArrowRight") {
      let step = event.key === "ArrowRight" ? 1 : -1;
      if (rtl) step = -step;
      let index = stages.indexOf(card.dataset.pending || card.dataset.stage) + step;
      if (stages[index] === card.dataset.stage) index += step;
      event.preventDefault();
      if (index < 0 || index >= stages.length) return;
      card.dataset.pending = stages[index];
      card.classList.add("pending");
      clearTargets();
      column(stages[index]).classList.add("drop-target");
      announce(say(text.pending, {title: cardTitle(card), stage: stageLabel(stages[index])}));
    } else if (event.key === "Enter" && card.dataset.pending) {
      event.preventDefault();
      const stage = card.dataset.pending;
      clearPending(card);
      move(card, stage, {focus: true});
    } else if (event.key === "Escape" && card.dataset.pending) {
      event.preventDefault();
      clearPending(card);
      announce(say(text.cancelled, {title: cardTitle(card)}));
    } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      const sibling = event.key === "ArrowDown" ? card.nextElementSibling : card.previousElementSibling;
      if (sibling && sibling.matches("[tabindex]")) { event.preventDefault(); clearPending(card); sibling.focus(); }
    }
  });
  board.addEventListener("focusout", (event) => {
    const card = event.target;
    if (card.matches && card.matches(".card[data-pending]") && !card.contains(event.relatedTarget)) clearPending(card);
  });

  // A card's "Move to" list and button.
  board.addEventListener("submit", (event) => {
    const form = event.target.closest(".move");
    if (!form) return;
    event.preventDefault();
    move(form.closest(".card"), form.elements.stage.value, {focus: true});
  });

  // -- "Load more" -------------------------------------------------------------------------
  const money = (value) => {
    if (!value || value.amount === undefined || value.amount === null) return "";
    try {
      return new Intl.NumberFormat(locale, {style: "currency", currency: value.currency}).format(Number(value.amount));
    } catch (e) {
      return `${value.amount} ${value.currency}`;
    }
  };
  const day = (value) => {
    try {
      return new Intl.DateTimeFormat(locale, {dateStyle: "medium", timeZone: "UTC"}).format(new Date(`${value.slice(0, 10)}T00:00:00Z`));
    } catch (e) {
      return value;
    }
  };
  const recordTitle = (item) => {
    let title = data.title_field ? item[data.title_field] : null;
    if (data.entity === "contact" && item.first_name) title = `${item.first_name} ${item.last_name || ""}`.trim();
    return title === null || title === undefined || title === "" ? `${data.label} #${item.id}` : String(title);
  };
  const reaches = (item) => {
    if (data.edit_scope === "all") return true;
    if (data.edit_scope === "none") return false;
    if (item.owner_id !== null && item.owner_id === data.user_id) return true;
    return data.edit_scope === "team" && data.team_ids.includes(item.team_id);
  };

  const learnOwners = async (items) => {
    const unknown = [...new Set(items.map((i) => i.owner_id).filter((id) => id && !users.has(id)))];
    if (!unknown.length) return;
    const filter = JSON.stringify({field: "id", op: "in", value: unknown});
    const answer = await crm.api("GET", `/api/user?limit=500&filter=${encodeURIComponent(filter)}`);
    if (!answer.ok || !answer.body) return;
    for (const user of answer.body.items) users.set(user.id, user.name || user.email || `#${user.id}`);
  };

  const renderCard = (item) => {
    const card = template.content.querySelector(".card").cloneNode(true);
    const title = recordTitle(item);
    card.dataset.id = String(item.id);
    card.dataset.version = String(item.version);
    card.dataset.stage = item.stage || "";
    card.dataset.owner = item.owner_id ? String(item.owner_id) : "";
    const link = card.querySelector(".card-title");
    link.href = `/${data.entity}/${item.id}`;
    link.textContent = title;
    const amount = card.querySelector(".card-amount");
    if (amount) { if (item.amount) amount.textContent = money(item.amount); else amount.remove(); }
    const owner = card.querySelector(".card-owner");
    if (owner) { if (users.has(item.owner_id)) owner.append(users.get(item.owner_id)); else owner.remove(); }
    const close = card.querySelector(".card-close");
    if (close) {
      if (item.expected_close) {
        const time = close.querySelector("time");
        time.dateTime = item.expected_close;
        time.textContent = day(item.expected_close);
      } else close.remove();
    }
    const form = card.querySelector(".move");
    if (form && data.movable && reaches(item)) {
      form.elements.id.value = String(item.id);
      form.elements.version.value = String(item.version);
      form.elements.stage.value = item.stage || "";
      card.querySelector("[data-move-label]").textContent = say(template.dataset.moveLabel, {title});
    } else {
      for (const name of ["draggable", "tabindex", "data-movable", "aria-describedby"]) card.removeAttribute(name);
      for (const part of card.querySelectorAll(".grip, .move")) part.remove();
    }
    return card;
  };

  board.addEventListener("click", async (event) => {
    const button = event.target.closest("button.more");
    if (!button) return;
    const section = button.closest(".column");
    button.disabled = true;
    const params = new URLSearchParams({filter: section.dataset.filter, sort: data.sort, limit: String(data.page_size),
                                        cursor: button.dataset.cursor});
    if (data.fields) params.set("fields", data.fields);
    if (data.search) params.set("q", data.search);
    const answer = await crm.api("GET", `/api/${encodeURIComponent(data.entity)}?${params}`);
    if (!answer.ok) {
      showError(crm.errorText(answer.body));
      button.disabled = false;
      return;
    }
    await learnOwners(answer.body.items);
    const list = section.querySelector(".cards");
    let added = 0;
    for (const item of answer.body.items) {
      if (board.querySelector(`.card[data-id="${item.id}"]`)) continue;  // moved here meanwhile
      list.append(renderCard(item));
      added += 1;
    }
    if (answer.body.next_cursor) {
      button.dataset.cursor = answer.body.next_cursor;
      button.disabled = false;
    } else {
      button.remove();
    }
    announce(say(text.loaded, {count: number(added), stage: section.dataset.label}));
  });
})();
