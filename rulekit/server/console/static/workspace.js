// The agents' workspace: the conversation list, the thread with its reply box, the editable
// client panel, and the admin view. Built on the JSON API of docs/console.md, with the helpers
// of console.js (window.rulekitConsole). Like console.js, everything received is put into the
// page as text; nothing is parsed as HTML.
"use strict";

(function () {
  const K = window.rulekitConsole;
  const { $, el, joined, when, getJSON, send } = K;
  const API = "/console/api";
  const SEEN_KEY = "rulekit.seen";
  const MAX_SEEN = 2000;  // conversations whose reading this browser remembers
  // the replies being written, kept in the browser so that a sign-in again (a session that
  // ran out sends the page to the sign-in page) finds them where they were: per conversation,
  // for the agent who wrote them only, the newest MAX_DRAFTS; signing out forgets them
  const DRAFTS_KEY = "rulekit.drafts";
  const MAX_DRAFTS = 50;
  const MAX_DRAFT = 20000;  // characters of one draft the browser keeps (a reply takes 5,000)
  const state = {
    entries: [],          // the list as last read
    cursor: null,         // next_cursor of the last page read
    open: null,           // the open conversation's view (GET conversations/{id})
    previews: {},         // conversation id -> the latest text the live stream brought
    seen: loadSeen(),     // conversation id -> last_activity_at when the agent last looked
    pendingReply: null,   // {id, text, key} of a reply not sent yet, for "Retry"
    drafts: Object.create(null),  // conversation id -> the reply being written there (oldest first)
    draftsOwner: null,    // the agent (lower-cased email) whose drafts the browser keeps
    sending: false,       // a reply is on its way
    timers: {},
  };

  function loadSeen() {
    try {
      const value = JSON.parse(window.localStorage.getItem(SEEN_KEY) || "null");
      return value && typeof value === "object" ? value : null;
    } catch (e) {
      return null;
    }
  }

  function saveSeen() {
    // every conversation ever listed would be remembered (a client can start thousands): the
    // browser's storage filled up, and from then on nothing read was remembered. The
    // conversations active longest ago are forgotten first (to be listed, they must be active
    // again: unread then anyway).
    const ids = Object.keys(state.seen);
    if (ids.length > MAX_SEEN) {
      ids.sort((a, b) => String(state.seen[b]).localeCompare(String(state.seen[a])));
      for (const id of ids.slice(MAX_SEEN)) delete state.seen[id];
    }
    try { window.localStorage.setItem(SEEN_KEY, JSON.stringify(state.seen)); } catch (e) { /* private mode */ }
  }

  function loadDrafts(me) {
    state.draftsOwner = me && !me.admin && me.email ? String(me.email).toLowerCase() : null;
    try {
      const saved = JSON.parse(window.localStorage.getItem(DRAFTS_KEY) || "null");
      if (!saved || !state.draftsOwner || saved.owner !== state.draftsOwner || !Array.isArray(saved.drafts)) {
        window.localStorage.removeItem(DRAFTS_KEY);  // another agent's are never shown
        return;
      }
      for (const pair of saved.drafts) {
        if (Array.isArray(pair) && typeof pair[0] === "string" && typeof pair[1] === "string" && pair[1]) {
          if (!(pair[0] in state.drafts)) state.drafts[pair[0]] = pair[1];
        }
      }
    } catch (e) { /* private mode, or nothing readable kept */ }
  }

  function saveDrafts() {
    clearTimeout(state.timers.drafts);
    if (!state.draftsOwner) return;
    const kept = Object.entries(state.drafts)
      .filter(([, text]) => text && text.length <= MAX_DRAFT)
      .slice(-MAX_DRAFTS);
    try {
      if (kept.length) window.localStorage.setItem(DRAFTS_KEY, JSON.stringify({ owner: state.draftsOwner, drafts: kept }));
      else window.localStorage.removeItem(DRAFTS_KEY);
    } catch (e) { /* private mode, or full */ }
  }

  function setDraft(id, text) {
    delete state.drafts[id];  // (the newest last)
    if (text) state.drafts[id] = text;
    later("drafts", saveDrafts, 300);
  }

  function forgetDrafts() {
    state.drafts = Object.create(null);
    state.draftsOwner = null;
    clearTimeout(state.timers.drafts);
    try { window.localStorage.removeItem(DRAFTS_KEY); } catch (e) { /* private mode */ }
  }

  function later(name, work, delay) {
    // coalesce bursts of live messages into one read
    clearTimeout(state.timers[name]);
    state.timers[name] = setTimeout(work, delay);
  }

  function conversationPath(id) {
    return API + "/conversations/" + encodeURIComponent(id);
  }

  function clientName(client) {
    if (!client) return "";
    return client.name || client.display_name || client.email || client.phone || client.id || "";
  }

  // -- the list ------------------------------------------------------------------------------
  function listQuery(cursor) {
    const params = new URLSearchParams();
    params.set("view", $("list-view").value);
    if ($("list-status").value) params.set("status", $("list-status").value);
    const q = $("list-q").value.trim();
    if (q) params.set("q", q);
    if (cursor) params.set("cursor", cursor);
    return API + "/conversations?" + params.toString();
  }

  async function loadList() {
    const data = await getJSON(listQuery(null));
    state.entries = data.conversations || [];
    state.cursor = data.next_cursor || null;
    if (state.seen === null) {
      // the first time this browser opens the workspace: what exists now counts as seen
      state.seen = {};
      for (const entry of state.entries) state.seen[entry.id] = entry.last_activity_at;
      saveSeen();
    }
    renderList();
  }

  async function loadMore() {
    if (!state.cursor) return;
    const data = await getJSON(listQuery(state.cursor));
    state.entries = state.entries.concat(data.conversations || []);
    state.cursor = data.next_cursor || null;
    renderList();
  }

  function unread(entry) {
    if (state.open && state.open.id === entry.id) return false;
    return (state.seen || {})[entry.id] !== entry.last_activity_at;
  }

  function assigneeLabel(conversation) {
    if (conversation.assignee) return ["→ ", conversation.assignee];
    // assigned to an agent this viewer may not see: named to those who may
    return conversation.assignee_hidden ? "→ another agent" : "unassigned";
  }

  function listItem(entry) {
    const conversation = entry.conversation || {};
    const isUnread = unread(entry);
    const button = el("button", { type: "button", class: "open" },
      el("span", { class: "name" }, clientName(entry.client) || entry.id),
      isUnread ? el("span", { class: "unread-dot", title: "unread" }, "●") : null,
      el("span", { class: "meta" },
        joined([entry.channel, conversation.status, assigneeLabel(conversation)], " · ")),
      state.previews[entry.id] ? el("span", { class: "preview" }, state.previews[entry.id]) : null,
      el("span", { class: "time" }, when(entry.last_activity_at)));
    button.addEventListener("click", () => {
      window.location.hash = "#/c/" + encodeURIComponent(entry.channel) + "/" + encodeURIComponent(entry.id);
    });
    const item = el("li", { dataset: { id: entry.id }, class: isUnread ? "unread" : "" }, button);
    if (state.open && state.open.id === entry.id) item.setAttribute("aria-current", "true");
    return item;
  }

  function renderList() {
    $("conversations").replaceChildren(...state.entries.map(listItem));
    $("no-conversations").hidden = state.entries.length > 0;
    $("list-more").hidden = !state.cursor;
    const count = state.entries.filter(unread).length;
    $("unread-count").textContent = String(count);
    $("unread-count").hidden = count === 0;
    document.title = (count ? "(" + count + ") " : "") + "rulekit console";
  }

  // -- the thread and the reply box ------------------------------------------------------------
  function threadItem(message) {
    const agent = message.agent && typeof message.agent === "object"
      ? message.agent.name || message.agent.email : message.agent;
    const author = message.author === "agent"
      ? agent || "agent"
      : message.author === "client" ? clientName(state.open && state.open.client) || "client" : message.author || "system";
    const notes = [];
    if (message.origin === "console") notes.push("from the console");
    if (message.recovered) notes.push("recovered");
    if (message.delivery) notes.push(typeof message.delivery === "string" ? message.delivery : (message.delivery.status || ""));
    return el("li", { class: "message author-" + String(message.author || "system"), dataset: { eventId: String(message.event_id || "") } },
      el("span", { class: "author" }, author),
      el("span", { class: "time" }, when(message.at)),
      notes.length ? el("span", { class: "quiet" }, " · ", joined(notes, " · ")) : null,
      el("span", { class: "text" }, message.text || ""));
  }

  // whether the thread's last message is on the screen (the agent reads the end)
  function atThreadEnd() {
    const last = $("thread").lastElementChild;
    if (!last) return true;
    const box = last.getBoundingClientRect();
    return box.top < window.innerHeight && box.bottom > 0;
  }

  function renderThread(data, again) {
    // opened, the thread shows its newest message; shown again (a message came, a change was
    // made), it follows only an agent reading its end: one reading further up stays there,
    // however often the client writes
    const follow = !again || atThreadEnd();
    $("thread-title").replaceChildren(K.iso(clientName(data.client) || data.id));
    // a long conversation's page holds its latest events: the agent must not take the first
    // message shown for the conversation's first, and can read further back
    $("thread-older").hidden = !data.older;
    $("thread-older").disabled = false;
    // the message read at the top stays where it was when older ones come above it
    const top = $("thread").firstElementChild;
    const anchor = again && top ? [top.dataset.eventId, top.getBoundingClientRect().top] : null;
    $("thread").replaceChildren(...(data.thread || []).map(threadItem));
    const last = $("thread").lastElementChild;
    if (last && follow) last.scrollIntoView({ block: "nearest" });
    else if (anchor) {
      const same = [...$("thread").children].find((item) => item.dataset.eventId === anchor[0]);
      if (same) window.scrollBy(0, same.getBoundingClientRect().top - anchor[1]);
    }
  }

  // -- pages of the open conversation ------------------------------------------------------------
  // The view answers a page of events at a time; the page holds the latest, older ones come
  // with the cursor "older" (Load older messages) and what is new with "after" (the newest
  // event the page has): a message arriving reads only what came since.
  function withPage(open, page, newer) {
    const fresh = new Set((page.events || []).map((e) => e.event_id));
    const kept = (list) => (list || []).filter((item) => !fresh.has(item.event_id));
    const merged = Object.assign({}, open);
    if (newer) {
      merged.events = [...(page.events || []), ...kept(open.events)];
      merged.thread = [...kept(open.thread), ...(page.thread || [])];
      merged.actions = [...(page.actions || []), ...kept(open.actions)];
      merged.conversation = Object.assign({}, open.conversation, page.conversation);
      merged.client = Object.assign({}, open.client, page.client);
      merged.assignable = page.assignable;
      merged.known_tags = page.known_tags;
    } else {
      merged.events = [...kept(open.events), ...(page.events || [])];
      merged.thread = [...(page.thread || []), ...kept(open.thread)];
      merged.actions = [...kept(open.actions), ...(page.actions || [])];
      merged.older = page.older;
      merged.truncated = page.truncated;
    }
    return merged;
  }

  async function loadOlder() {
    const open = state.open;
    if (!open || !open.older) return;
    $("thread-older").disabled = true;
    try {
      const page = await getJSON(K.conversationPath(open.channel, open.id) + "?before=" + encodeURIComponent(open.older));
      if (state.open && state.open.id === open.id) K.renderConversation(withPage(state.open, page, false));
    } finally {
      $("thread-older").disabled = false;
    }
  }

  // where the page reads on from: its newest event, or the one before its oldest with a job
  // still pending (a reply's delivery is shown as it stands); null: read it all again
  function readsOnFrom(events) {
    let from = events.length ? 0 : -1;
    events.forEach((record, index) => {
      if ((record.jobs || []).some((job) => job.status === "pending")) from = index + 1;
    });
    return from >= 0 && from < events.length ? events[from].event_id : null;
  }

  async function readNewer(open) {
    let merged = open;
    const from = readsOnFrom(open.events || []);
    if (!from) return null;
    let cursor = from;
    for (let pages = 0; cursor && pages < 20; pages++) {
      const page = await getJSON(K.conversationPath(open.channel, open.id) + "?after=" + encodeURIComponent(cursor));
      merged = withPage(merged, page, true);
      cursor = page.newer;
      if (!cursor) return merged;
    }
    return null;  // too much came meanwhile: the latest page is read instead
  }

  function replyStatus(text, failed) {
    $("reply-status").textContent = text;
    $("reply-status").classList.toggle("error", Boolean(failed));
  }

  async function sendReply(text, key, conversation) {
    const id = conversation || (state.open && state.open.id);
    if (!id || state.sending) return;  // one reply on its way at a time
    state.sending = true;
    // kept until it is sent: the same text sent again (Retry, Enter) is the same reply
    state.pendingReply = { id, text, key };
    $("reply-send").disabled = true;
    $("reply-retry").hidden = true;
    replyStatus("sending…", false);
    try {
      await send("POST", conversationPath(id) + "/messages", { text }, { "Idempotency-Key": key });
      state.pendingReply = null;
      if (state.drafts[id] === text) setDraft(id, "");
      if (state.open && state.open.id === id) $("reply-text").value = "";
      replyStatus("sent", false);
      refreshOpen();
    } catch (error) {
      replyStatus("not sent: " + String(error.message || error), true);
      $("reply-retry").hidden = false;
    } finally {
      state.sending = false;
      $("reply-send").disabled = false;
    }
  }

  function newKey() {
    const bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function submitReply(event) {
    event.preventDefault();
    const text = $("reply-text").value;
    // Enter again (or Send) while the reply is on its way sends nothing more
    if (!text.trim() || state.sending || !state.open) return;
    // the reply that was not sent, sent again, keeps its Idempotency-Key: had it reached the
    // daemon after all, it is not sent twice
    const pending = state.pendingReply;
    const again = pending && pending.id === state.open.id && pending.text === text;
    sendReply(text, again ? pending.key : newKey());
  }

  // -- the client panel ------------------------------------------------------------------------
  const EDITABLE = ["name", "email", "phone", "notes"];

  function fillClientForm(client) {
    for (const field of EDITABLE) {
      const input = $("client-" + field);
      if (document.activeElement !== input) input.value = client[field] || "";
      input.dataset.was = client[field] || "";
    }
  }

  async function saveClient(event) {
    event.preventDefault();
    if (!state.open) return;
    const changes = {};
    for (const field of EDITABLE) {
      const input = $("client-" + field);
      if (input.value !== input.dataset.was) changes[field] = input.value;
    }
    if (!Object.keys(changes).length) {
      $("client-status").textContent = "nothing changed";
      return;
    }
    $("client-save").disabled = true;
    $("client-status").textContent = "saving…";
    try {
      const answer = await send("PATCH", conversationPath(state.open.id) + "/client", changes);
      $("client-status").textContent = answer && answer.changed && answer.changed.length
        ? "saved: " + answer.changed.join(", ") : "nothing changed";
      refreshOpen();
    } catch (error) {
      $("client-status").textContent = "not saved: " + String(error.message || error);
    } finally {
      $("client-save").disabled = false;
    }
  }

  function renderRulesFired(data) {
    const items = [];
    for (const record of data.events || []) {
      const event = record.event && typeof record.event === "object" ? record.event : {};
      const eventId = record.event_id || event.id;
      const rules = new Set(Array.isArray(record.matched) ? record.matched : []);
      for (const job of record.jobs || []) if (job.rule) rules.add(job.rule);
      for (const rule of rules) {
        const jobs = (record.jobs || []).filter((j) => j.rule === rule)
          .map((j) => [j.action, " ", j.status || "", j.error ? [" (", j.error, ")"] : []]);
        const link = el("a", { href: "#", class: "trace-link" }, "trace");
        link.addEventListener("click", (e) => {
          e.preventDefault();
          const target = $("conversation-events").querySelector('li[data-event-id="' + CSS.escape(String(eventId || "")) + '"]');
          if (target) { target.scrollIntoView({ block: "center" }); target.classList.add("highlight"); }
        });
        items.push(el("li", {}, el("strong", {}, rule), " on ", String(event.event || record.event || ""),
          jobs.length ? [": ", joined(jobs, "; ")] : [], " ", link));
      }
    }
    $("rules-fired").replaceChildren(...(items.length ? items : [el("li", { class: "quiet" }, "None yet.")]));
  }

  // -- the open conversation -------------------------------------------------------------------
  // a reply being written belongs to its conversation: another one opened shows its own (or an
  // empty box), so that Enter never sends what was meant for one client to another
  function switchDraft(leaving, coming) {
    const box = $("reply-text");
    if (leaving) setDraft(leaving.id, box.value);
    box.value = (coming && state.drafts[coming.id]) || "";
    const pending = state.pendingReply;
    $("reply-retry").hidden = !(coming && pending && pending.id === coming.id);
    replyStatus("", false);
  }

  function showOpen(data) {
    const again = Boolean(data && state.open && state.open.id === data.id);
    if (!again) switchDraft(state.open, data);
    state.open = data;
    $("thread-view").hidden = !data;
    if (!data) {
      renderList();
      return;
    }
    renderThread(data, again);
    fillClientForm(data.client || {});
    renderRulesFired(data);
    const entry = state.entries.find((e) => e.id === data.id);
    if (entry) {
      state.seen[entry.id] = entry.last_activity_at;
      saveSeen();
    }
    renderList();
  }

  function refreshOpen() {
    if (!state.open) return;
    const { id } = state.open;
    later("open", async () => {
      // console.js shows the conversation (facts, events); this script hears it as a
      // "rulekit:conversation" like any opening
      loadList().catch(() => {});
      const open = state.open;
      if (!open || open.id !== id) return;
      let merged = null;
      try {
        merged = await readNewer(open);
      } catch (error) {
        merged = null;  // its cursor no longer stored (retention): the latest page again
      }
      if (!state.open || state.open.id !== id) return;  // another one opened meanwhile
      if (state.open !== open) {  // older messages loaded meanwhile: read on from there
        refreshOpen();
        return;
      }
      if (merged) K.renderConversation(merged);
      else K.showConversation(open.channel, open.id).catch(() => {});
    }, 150);
  }

  // -- live messages -----------------------------------------------------------------------------
  function onMessage(message) {
    const event = message.event && typeof message.event === "object" ? message.event : null;
    const conversation = event ? event.conversation : message.conversation;
    const id = conversation && typeof conversation === "object" ? conversation.id : message.conversation_id;
    const text = event ? event.message && event.message.text : message.text;
    if (id && text && !message.duplicate) state.previews[id] = String(text);
    if (id || message.type === "event") later("list", () => loadList().catch(() => {}), 200);
    // (messages the stream dropped may have named it: what is new is read on all the same)
    if (state.open && ((id && id === state.open.id) || message.type === "gap")) refreshOpen();
    if (message.type === "dead_letter" && document.body.dataset.view === "admin") loadAdmin().catch(() => {});
  }

  // -- the admin view ----------------------------------------------------------------------------
  function facts(target, rows) {
    target.replaceChildren();
    for (const [label, value] of rows) {
      if (value === undefined || value === null || value === "") continue;
      target.append(el("dt", {}, label), el("dd", {}, value));
    }
  }

  function setAsideItem(item) {
    const entry = el("li", { dataset: { inboxId: String(item.inbox_id || item.id || "") } },
      joined([item.channel, "webhook #" + (item.inbox_id || item.id)], " · "),
      item.error ? el("span", { class: "text" }, String(item.error)) : null);
    const id = item.inbox_id || item.id;
    if (id) {
      const requeue = el("button", { type: "button", class: "requeue" }, "Process again");
      const status = el("span", { role: "status" });
      requeue.addEventListener("click", () => {
        requeue.disabled = true;
        send("POST", API + "/set-aside/" + encodeURIComponent(String(id)) + "/requeue")
          .then(() => { status.textContent = " queued again"; })
          .catch((error) => { status.textContent = " " + String(error.message || error); requeue.disabled = false; });
      });
      entry.append(" ", requeue, status);
    }
    return entry;
  }

  async function loadAdmin() {
    const me = await getJSON(API + "/me");
    facts($("admin-rules"), [
      ["Rules version", me.rules_version], ["Loaded", when(me.loaded_at)],
      ["Not configured", (me.problems || []).join("\n")],
    ]);
    const recent = await getJSON(API + "/recent");
    const reload = recent.reload;
    $("admin-reload").hidden = !(reload && reload.ok === false);
    $("admin-reload").textContent = reload && reload.ok === false
      ? "The last reload failed:\n" + ([].concat(reload.errors || reload.error || []).join("\n") || "the daemon's log says why") : "";
    const dead = (await getJSON(API + "/dead-letters")).dead_letters || [];
    $("admin-dead").replaceChildren(...dead.map(K.deadLetterItem));
    $("admin-no-dead").hidden = dead.length > 0;
    const aside = (await getJSON(API + "/set-aside")).set_aside || [];
    $("admin-set-aside").replaceChildren(...aside.map(setAsideItem));
    $("admin-no-set-aside").hidden = aside.length > 0;
    await loadStats();
    await loadTeam();
  }

  async function loadTeam() {
    // who assign can pick now: online (a console open), away (said so) or offline
    const agents = (await getJSON(API + "/presence")).agents || [];
    facts($("admin-team"), agents.map((a) => [a.name || a.email, a.status]));
  }

  async function loadStats() {
    let rules = [];
    try {
      const data = await getJSON(API + "/stats");
      rules = Array.isArray(data.rules) ? data.rules : [];
    } catch (e) {
      rules = [];  // a daemon without statistics
    }
    const body = $("admin-stats").tBodies[0];
    body.replaceChildren(...rules.map((r) => el("tr", {},
      el("th", { scope: "row" }, r.rule || r.name || ""), el("td", {}, String(r.matched ?? "")),
      el("td", {}, String(r.done ?? "")), el("td", {}, String(r.failed ?? "")),
      el("td", {}, String(r.dead ?? "")), el("td", {}, when(r.last_fired)))));
    $("admin-stats").hidden = rules.length === 0;
    $("admin-no-stats").hidden = rules.length > 0;
  }

  // -- presence: an agent says they are away (assign then passes them by) ------------------------
  async function showPresence(me) {
    if (!me || me.admin) return;
    const choice = $("presence");
    const agents = (await getJSON(API + "/presence")).agents || [];
    const mine = agents.find((a) => String(a.email).toLowerCase() === String(me.email).toLowerCase());
    choice.value = mine && mine.status === "away" ? "away" : "online";
    choice.hidden = false;
    choice.addEventListener("change", () => {
      send("POST", API + "/presence", { status: choice.value })
        .then((answer) => { choice.dataset.presence = answer.presence; })
        .catch(() => {});
    });
  }

  // -- start -------------------------------------------------------------------------------------
  function start() {
    $("reply-form").addEventListener("submit", submitReply);
    $("reply-text").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) submitReply(event);
    });
    $("reply-text").addEventListener("input", () => {
      if (state.open) setDraft(state.open.id, $("reply-text").value);
    });
    // kept when the page goes (to the sign-in page too), forgotten on signing out
    window.addEventListener("pagehide", saveDrafts);
    const signOut = $("sign-out").form;
    if (signOut) signOut.addEventListener("submit", forgetDrafts);
    $("reply-retry").addEventListener("click", () => {
      const pending = state.pendingReply;
      if (pending) sendReply(pending.text, pending.key, pending.id);
    });
    $("client-form").addEventListener("submit", saveClient);
    $("list-filter").addEventListener("submit", (event) => { event.preventDefault(); loadList().catch(() => {}); });
    for (const id of ["list-view", "list-status"]) $(id).addEventListener("change", () => loadList().catch(() => {}));
    $("list-q").addEventListener("input", () => later("search", () => loadList().catch(() => {}), 250));
    $("list-more").addEventListener("click", () => loadMore().catch(() => {}));
    $("thread-older").addEventListener("click", () => loadOlder().catch(() => {}));
    document.addEventListener("rulekit:message", (event) => onMessage(event.detail || {}));
    document.addEventListener("rulekit:conversation", (event) => showOpen(event.detail));
    document.addEventListener("rulekit:admin", () => loadAdmin().catch((error) => {
      $("admin-reload").hidden = false;
      $("admin-reload").textContent = String(error.message || error);
    }));
    document.addEventListener("rulekit:ready", (event) => {
      loadDrafts(event.detail);
      loadList().catch(() => {});
      showPresence(event.detail).catch(() => {});
    });
  }

  document.addEventListener("DOMContentLoaded", start);
})();
